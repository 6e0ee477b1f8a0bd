"""Paging a task list: which pages to ask for, in parallel, and merging them in order.

TotalCount is only a hint (the provider's own example gets it wrong): paging goes on
while pages come back full and ends at the first short one. :func:`fetch_rest` keeps
``parallel_pages`` requests in flight; :class:`WindowBuilder` merges the pages in order,
each task once, into a :class:`TaskWindow`.
"""

import math
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass

from exporter.gateway.answers import PageTask, TaskInfo
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError
from exporter.gateway.transport import ClientOptions


@dataclass(frozen=True)
class TaskWindow:
    """The tasks of one target created in ``[begin, end]``, each once, and how paging went.

    ``tasks`` is empty when they were handed on page by page and not kept (see
    :class:`WindowBuilder`); ``task_count`` counts them either way. A task is a
    :class:`~exporter.gateway.answers.KnownTask` only where the caller said which it knows.
    ``requests`` are the requests made for it, answered or not (pages past the end
    included), retries aside.
    """

    tasks: Sequence[PageTask]
    duplicate_tasks: int
    total_count: int | None
    pages: int
    task_count: int
    requests: int = 0

    def decoded(self) -> list[TaskInfo]:
        """The tasks, every one decoded: a window fetched without ``known``."""
        tasks = [task for task in self.tasks if isinstance(task, TaskInfo)]
        if len(tasks) < len(self.tasks):
            raise ValueError("a window of known tasks is read through the store that knows them")
        return tasks


@dataclass(frozen=True)
class Page:
    """One answer's tasks and the TotalCount it gave."""

    tasks: Sequence[PageTask]
    total_count: int | None


def fetch_rest(
    first: Page,
    submit: Callable[[int], Future[Page]],
    options: ClientOptions,
    deadline: Deadline,
    window: "WindowBuilder",
) -> None:
    """Page 0, then 1, 2, ... up to the first short one, ``parallel_pages`` in flight.

    A page is asked for as soon as a slot frees, not window by window, so one slow
    answer holds up only its own slot. Pages are asked for up to the promised ones
    (plus one when they would all be full); if the last of them is full too,
    TotalCount was too low and the limit moves a window past it. A too-high
    TotalCount costs at most the pages in flight when the short page arrives; a
    too-low one at most a window. Pages go to ``window`` in order as they complete,
    after the freed slots are filled again.

    A page that fails fails the collection only once it is known to be needed: a
    too-high TotalCount sends requests past the end, and a gateway that errs on an
    offset beyond its data must not take down a target whose pages all came in.
    """
    paging = Paging(first, options.page_size)
    in_flight: dict[Future[Page], int] = {}
    try:
        while True:
            while len(in_flight) < options.parallel_pages and paging.wanted(options.max_pages):
                offset = paging.next_index * options.page_size
                future = submit(offset)
                in_flight[future] = paging.take_next()
            for page in paging.take_ready():
                window.add(page.tasks)
            if paging.complete:
                return
            needed = paging.needed_failure()
            if needed is not None:
                raise needed.detached()
            if not in_flight:
                raise ApiError("invalid_response", f"more than {options.max_pages} pages of tasks")
            done, _ = wait(in_flight, timeout=deadline.remaining(), return_when=FIRST_COMPLETED)
            if not done:
                raise ApiError("timeout", "pages not answered within the deadline")
            for future in done:
                paging.settle(in_flight.pop(future), future, options.parallel_pages)
    finally:
        # Pages past the short one, or after a failure, are not needed: those not
        # started are dropped, those under way are waited for, so that no request of
        # this collection is still running, or not yet counted, once it returns.
        for future in in_flight:
            future.cancel()
        wait(in_flight, timeout=deadline.remaining())


class Paging:
    """Which pages to ask for next, and when the pages received are complete."""

    def __init__(self, first: Page, page_size: int) -> None:
        total_count = first.total_count
        promised = math.ceil(total_count / page_size) if total_count and total_count > 0 else 1
        # When the promised pages would all be full, one more confirms the end; page 0
        # came back full, so page 1 is wanted whatever TotalCount says.
        confirm = 1 if not total_count or total_count % page_size == 0 else 0
        self.limit = max(2, promised + confirm)  # ask for pages below this index
        self.page_size = page_size
        self.next_index = 1  # page 0 was asked for alone
        # Page 0 is taken after the first requests for the others are under way.
        self.pages: dict[int, Page] = {0: first}  # received, not yet taken
        self.taken = 0  # the next page to take, in order
        self.end: int | None = None  # index of the first short page
        # Pages whose request failed, held until it is known whether they are needed.
        self.failed: dict[int, ApiError] = {}

    def wanted(self, max_pages: int) -> bool:
        """Whether another page should be asked for now.

        Not after a failure: either the failed page is needed, and the collection
        fails, or the end comes before it, and the pages after it are not needed either.
        """
        return self.end is None and not self.failed and self.next_index < min(self.limit, max_pages)

    def settle(self, index: int, request: Future[Page], window: int) -> None:
        """Take what the finished ``request`` for page ``index`` came to: a page or an error."""
        error = request.exception()
        if error is None:
            self.receive(index, request.result(), window)
        elif isinstance(error, ApiError):
            # Held detached: its traceback holds the frames of the request (the answer read
            # so far) and, once raised, of whoever raised it.
            self.fail(index, error.detached())
        else:
            raise error  # a bug of ours, with its traceback

    def fail(self, index: int, error: ApiError) -> None:
        """Hold the error of a page whose request failed."""
        if self.end is None or index < self.end:
            self.failed[index] = error

    def needed_failure(self) -> ApiError | None:
        """The error of the first failed page if that page is needed, else None.

        A failed page is needed once every page before it is in and full (paging would
        go through it), or once a short page comes after it; one past the first short
        page never is.
        """
        if not self.failed:
            return None
        index = min(self.failed)
        if index == self.taken or (self.end is not None and index < self.end):
            return self.failed[index]
        return None

    def take_next(self) -> int:
        """The index of the next page to ask for, now taken."""
        index = self.next_index
        self.next_index += 1
        return index

    def receive(self, index: int, page: Page, window: int) -> None:
        """Record a page; move the limit on when every page asked for came back full."""
        self.pages[index] = page
        if len(page.tasks) < self.page_size and (self.end is None or index < self.end):
            self.end = index
            self.failed = {i: error for i, error in self.failed.items() if i < index}
        if self.end is None and all(
            i < self.taken or i in self.pages for i in range(1, self.limit)
        ):
            self.limit += window  # TotalCount was too low

    def take_ready(self) -> list[Page]:
        """Pages not yet taken whose predecessors are all in, up to the first short one."""
        ready = []
        while self.taken in self.pages and (self.end is None or self.taken <= self.end):
            ready.append(self.pages.pop(self.taken))
            self.taken += 1
        return ready

    @property
    def complete(self) -> bool:
        """Whether every page up to the first short one has been taken."""
        return self.end is not None and self.taken > self.end


class WindowBuilder:
    """Pages merged in order, each TaskId kept at its first sighting.

    Paging a set that changes meanwhile repeats tasks. Each page's new tasks are handed
    on as the page is added; with ``keep_tasks`` false they are not kept as well, so a
    caller that keeps only what it needs of them holds no more than a page at a time.
    """

    def __init__(
        self, on_page: Callable[[list[PageTask]], None] | None, *, keep_tasks: bool = True
    ) -> None:
        self._on_page = on_page
        self._keep_tasks = keep_tasks
        self._seen: set[str] = set()
        self._tasks: list[PageTask] = []
        self._count = 0
        self._duplicates = 0
        self._pages = 0

    def add(self, page: Sequence[PageTask]) -> None:
        """Add the next page in order."""
        new: list[PageTask] = []
        for task in page:
            task_id = task.task_id
            if task_id is not None:
                if task_id in self._seen:
                    self._duplicates += 1
                    continue
                self._seen.add(task_id)
            new.append(task)
        if self._keep_tasks:
            self._tasks.extend(new)
        self._count += len(new)
        self._pages += 1
        if self._on_page is not None:
            self._on_page(new)

    def build(self, total_count: int | None, requests: int) -> TaskWindow:
        """The window of every page added, which took ``requests`` requests."""
        return TaskWindow(
            self._tasks, self._duplicates, total_count, self._pages, self._count, requests
        )
