"""The API client: the calls the exporter makes, each within a scrape's deadline.

It knows nothing of metrics: it returns validated answers or raises :class:`ApiError`
with a reason, and keeps plain counts of its requests by action and outcome for whoever
wants them. The parts live in their own modules: the signed exchange and its retries in
:mod:`exporter.gateway.transport`, task paging in :mod:`exporter.gateway.paging`, the
domain calls in :mod:`exporter.gateway.domain_calls`.
"""

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final

from pydantic import SecretStr

from exporter.gateway.answers import (
    PREFETCH_ACTION,
    PROJECTS_ACTION,
    REFRESH_ACTION,
    PageTask,
    ProjectInfo,
    ProjectListResponse,
    QuotaResponse,
    RawTaskListResponse,
    TaskListResponse,
    decode_tasks,
)
from exporter.gateway.budgets import ByteBudget, CollectionDeadline
from exporter.gateway.deadline import Deadline
from exporter.gateway.domain_calls import DomainList, domain_quota, list_domains, prefetch_enabled
from exporter.gateway.outcomes import ApiError, RequestStats
from exporter.gateway.paging import Page, TaskWindow, WindowBuilder, fetch_rest
from exporter.gateway.signature import ParamValue
from exporter.gateway.transport import ClientOptions, Transport

ACTION: Final = PREFETCH_ACTION
# The task list actions: a refresh task list has the prefetch one's parameters and answer.
_TASK_ACTIONS: Final = frozenset({PREFETCH_ACTION, REFRESH_ACTION})


class ApiClient:
    """Fetches prefetch and refresh tasks, domains and their quotas from a UCDN gateway.

    >>> client = ApiClient("https://api.an-link.com/", "public", SecretStr("private"))
    >>> window = client.fetch_tasks("", is_dcdn=False, begin=t - 86400, end=t,
    ...                             deadline=Deadline.after(9.5))  # doctest: +SKIP
    """

    def __init__(
        self,
        api_url: str,
        public_key: str,
        private_key: SecretStr,
        *,
        options: ClientOptions | None = None,
        stats: RequestStats | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.options = options or ClientOptions()
        self.stats = stats or RequestStats()
        self._transport = Transport(
            api_url, public_key, private_key, options=self.options, stats=self.stats, sleep=sleep
        )
        # Pages of several targets share one bounded pool, so the gateway sees a bounded load.
        self._pool = ThreadPoolExecutor(
            max_workers=self.options.parallel_pages * 4, thread_name_prefix="api-page"
        )

    @property
    def pace(self) -> float:
        """The requests per second this client's rate limit allows now: the configured
        rate, or less after the gateway refused requests for its rate (0: no limit)."""
        return self._transport.pace

    def close(self) -> None:
        """End every request under way at once; release the connection pool and page threads.

        Requests started afterwards end at once too, as timeouts.
        """
        self._transport.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def collection(self, deadline: Deadline) -> CollectionDeadline:
        """``deadline`` with its collection's byte budget: the one it carries, else a fresh
        one of ``max_collection_bytes``. Pass it to every call of one collection (its pages
        and its lookups), so that together they read no more; a call given a plain
        deadline has a budget of its own."""
        if isinstance(deadline, CollectionDeadline):
            return deadline
        return CollectionDeadline(deadline, ByteBudget(self.options.max_collection_bytes))

    def fetch_tasks(
        self,
        project_id: str,
        *,
        is_dcdn: bool,
        begin: int,
        end: int,
        deadline: Deadline,
        on_page: Callable[[list[PageTask]], None] | None = None,
        action: str = PREFETCH_ACTION,
        keep_tasks: bool = True,
        known: Mapping[int, str] | None = None,
    ) -> TaskWindow:
        """Every task created in ``[begin, end]``, paging until a page comes back short.

        ``action`` is :data:`~exporter.gateway.answers.PREFETCH_ACTION` or, for refresh (purge)
        tasks, :data:`~exporter.gateway.answers.REFRESH_ACTION`; anything else is a ValueError.
        The first page is asked for alone, so a small account costs one request; the
        pages its ``TotalCount`` promises then come ``parallel_pages`` at a time (with one
        more to confirm the end when the last promised page would be full). TotalCount is
        only a hint (the provider's own example gets it wrong): while pages keep coming
        back full, paging goes on, and the first short page ends it.

        ``on_page``, if given, is called in this thread with each page's new tasks, in
        page order, as soon as the pages before it are in, while later pages are still
        on the wire; with ``keep_tasks`` false, the window does not keep them as well.

        ``known`` maps the keys of tasks the caller holds (see :func:`decode_tasks`) to
        their TaskIds: a task whose JSON has one of them comes as a
        :class:`~exporter.gateway.answers.KnownTask`, not decoded again. Without it, every task
        is decoded.
        """
        base = _query(project_id, is_dcdn, begin, end, self.options.page_size, action=action)
        limits = self.collection(deadline)
        window = WindowBuilder(on_page, keep_tasks=keep_tasks)
        return self._fetch_window(base, limits, window, known)

    def count_tasks(
        self,
        project_id: str,
        *,
        is_dcdn: bool,
        begin: int,
        end: int,
        deadline: Deadline,
        action: str = PREFETCH_ACTION,
    ) -> int:
        """One signed request: how many tasks of ``action`` the gateway has in ``[begin, end]``."""
        query = _query(project_id, is_dcdn, begin, end, 1, action=action)
        answer = self._transport.call(query, deadline, TaskListResponse)
        return len(answer.task_list) if answer.total_count is None else answer.total_count

    def list_domains(self, project_id: str, *, deadline: Deadline, limit: int) -> DomainList:
        """The project's domains, at most ``limit`` of them, and how many the API has.

        See :func:`exporter.gateway.domain_calls.list_domains`.
        """
        limits = self.collection(deadline)
        return list_domains(self._transport, self.options, project_id, deadline=limits, limit=limit)

    def domain_quota(self, project_id: str, domain_id: str, *, deadline: Deadline) -> QuotaResponse:
        """One domain's daily prefetch and refresh quotas, and what was submitted today."""
        return domain_quota(self._transport, project_id, domain_id, deadline=deadline)

    def prefetch_enabled(self, project_id: str, domain_id: str, *, deadline: Deadline) -> bool:
        """Whether prefetch is switched on for one domain."""
        return prefetch_enabled(self._transport, project_id, domain_id, deadline=deadline)

    def list_projects(self, *, deadline: Deadline) -> list[ProjectInfo]:
        """Every project the key can see (``GetProjectList``, one request: it has no paging),
        each ProjectId once, in the answer's order.

        A project listed without a ProjectId is left out: no task call could name it.
        """
        answer = self._transport.call({"Action": PROJECTS_ACTION}, deadline, ProjectListResponse)
        projects: dict[str, ProjectInfo] = {}
        for project in answer.project_set:
            if project.project_id:
                projects.setdefault(project.project_id, project)
        return list(projects.values())

    def lookup_tasks(
        self,
        project_id: str,
        *,
        is_dcdn: bool,
        task_ids: Sequence[str],
        begin: int,
        end: int,
        deadline: Deadline,
        action: str = PREFETCH_ACTION,
        known: Mapping[int, str] | None = None,
    ) -> TaskWindow:
        """The tasks among ``task_ids`` (distinct) created in ``[begin, end]``, by ``TaskId.N``.

        One request asks for them all, with a page as long as the list; another page is
        asked for only when an answer comes back full without every task asked for (the
        gateway repeated some, or added others). ``known`` is as for :meth:`fetch_tasks`.
        """
        if not task_ids:
            raise ValueError("no TaskId to look up")
        base = _query(project_id, is_dcdn, begin, end, len(task_ids), action=action)
        base.update({f"TaskId.{index}": task_id for index, task_id in enumerate(task_ids)})
        return self._lookup(base, len(task_ids), set(task_ids), deadline, known)

    def _lookup(
        self,
        base: dict[str, ParamValue],
        limit: int,
        missing: set[str],
        deadline: Deadline,
        known: Mapping[int, str] | None,
    ) -> TaskWindow:
        limits = self.collection(deadline)
        window = WindowBuilder(None)
        requests = 0
        while True:
            page = self._fetch_page(base, requests * limit, limits, known)
            requests += 1
            window.add(page.tasks)
            missing.difference_update(task.task_id for task in page.tasks)
            if not missing or len(page.tasks) < limit:
                return window.build(page.total_count, requests)
            if requests >= self.options.max_pages:
                raise ApiError("invalid_response", f"more than {requests} pages of tasks")

    def _fetch_window(
        self,
        base: dict[str, ParamValue],
        deadline: Deadline,
        window: WindowBuilder,
        known: Mapping[int, str] | None,
    ) -> TaskWindow:
        requests = [1]  # page 0, then every page fetch_rest asks for

        def submit(offset: int) -> "Future[Page]":
            requests[0] += 1
            return self._pool.submit(self._fetch_page, base, offset, deadline, known)

        first = self._fetch_page(base, 0, deadline, known)
        if len(first.tasks) >= self.options.page_size:
            fetch_rest(first, submit, self.options, deadline, window)
        else:
            window.add(first.tasks)
        return window.build(first.total_count, requests[0])

    def _fetch_page(
        self,
        base: dict[str, ParamValue],
        offset: int,
        deadline: Deadline,
        known: Mapping[int, str] | None,
    ) -> Page:
        query = {**base, "Offset": offset}
        if known is None:
            answer = self._transport.call(query, deadline, TaskListResponse)
            return Page(answer.task_list, answer.total_count)

        def decode(answer: RawTaskListResponse) -> Page:
            return Page(decode_tasks(answer.task_list, known), answer.total_count)

        return self._transport.call_then(query, deadline, RawTaskListResponse, decode)


def _query(
    project_id: str, is_dcdn: bool, begin: int, end: int, limit: int, *, action: str
) -> dict[str, ParamValue]:
    if action not in _TASK_ACTIONS:
        raise ValueError(f"not a task list action: {action!r}")
    query: dict[str, ParamValue] = {
        "Action": action,
        "BeginTime": begin,
        "EndTime": end,
        "IsDcdn": is_dcdn,
        "Limit": limit,
    }
    if project_id:  # an empty ProjectId means the default project: leave it out
        query["ProjectId"] = project_id
    return query
