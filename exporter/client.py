"""The API client: signed requests, bounded retries and paging, each within a scrape's deadline.

It knows nothing of metrics: it returns validated tasks or raises :class:`ApiError`
with a reason, and keeps plain counts of its requests by outcome for whoever wants them.
Requests are POST form bodies, as the official SDKs send them, so that the signed
parameters never appear in a URL, a proxy's access log or an exception message.
"""

import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Final, Literal, get_args
from urllib.parse import urlencode

import requests
import urllib3
from pydantic import SecretStr

from exporter import __version__
from exporter.deadline import Deadline
from exporter.model import InvalidResponseError, TaskInfo, TaskListResponse, decode_response
from exporter.signature import ParamValue, signed_form
from exporter.watchdog import GuardedAdapter, Watchdog

ACTION: Final = "DescribeNewUcdnPrefetchCacheTask"
Outcome = Literal[
    "ok", "http_error", "timeout", "connection_error", "api_error", "invalid_response"
]
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)

_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
_BACKOFF_BASE_SECONDS: Final = 0.2
_BACKOFF_CAP_SECONDS: Final = 5.0
_READ_CHUNK: Final = 1024 * 1024
_DETAIL_LIMIT: Final = 200

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request or a collection failed; ``reason`` is one of :data:`OUTCOMES` other than ok."""

    def __init__(self, reason: Outcome, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Outcome = reason
        self.detail = detail


class RequestStats:
    """Counts of API requests by outcome since start, safe to update from many threads."""

    def __init__(self) -> None:
        self._counts: Counter[Outcome] = Counter()
        self._lock = threading.Lock()

    def record(self, outcome: Outcome) -> None:
        """Count one request that ended with ``outcome``."""
        with self._lock:
            self._counts[outcome] += 1

    def snapshot(self) -> dict[Outcome, int]:
        """Every outcome with its count, zeros included."""
        with self._lock:
            return {outcome: self._counts[outcome] for outcome in OUTCOMES}


@dataclass(frozen=True)
class ClientOptions:
    """How the client talks to the gateway; the defaults are the documented settings' defaults."""

    page_size: int = 100
    max_pages: int = 1000
    parallel_pages: int = 8
    request_timeout: float = 10.0
    max_retries: int = 2
    max_response_bytes: int = 64 * 1024 * 1024
    max_collection_bytes: int = 32 * 1024 * 1024
    ca_bundle: Path | None = None


@dataclass(frozen=True)
class TaskWindow:
    """The tasks of one target created in ``[begin, end]``, each once."""

    tasks: list[TaskInfo]
    duplicate_tasks: int
    total_count: int | None
    pages: int


@dataclass(frozen=True)
class _Page:
    tasks: list[TaskInfo]
    total_count: int | None


class ApiClient:
    """Fetches prefetch tasks from a UCDN gateway.

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
        self._public_key = public_key
        self._private_key = private_key
        self.options = options or ClientOptions()
        self.stats = stats or RequestStats()
        self._sleep = sleep
        # An adapter rather than a Session: a Session would merge cookies, hooks, proxy and
        # CA variables from the environment (a stray REQUESTS_CA_BUNDLE must not change
        # whom we trust) and look for redirects, at a cost per page that shows in a scrape.
        # Retries are ours, bounded by the scrape's deadline; urllib3's know no deadline.
        # Its connections hand their sockets to the watchdog, which ends a request at its
        # deadline whatever part of the exchange it is in.
        self._adapter = GuardedAdapter(pool_maxsize=self.options.parallel_pages * 4, max_retries=0)
        self._watchdog = Watchdog()
        self._verify: bool | str = str(self.options.ca_bundle) if self.options.ca_bundle else True
        # The URL and headers are parsed once; each attempt copies this and adds its body.
        # No Accept-Encoding: http.client asks for identity, so that the size cap counts
        # the bytes we decode and no decompression runs unbounded on a gateway's say-so.
        headers = {
            "User-Agent": f"ucdn-prefetch-exporter/{__version__}",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        self._request = requests.Request("POST", api_url, headers=headers).prepare()
        # Pages of several targets share one bounded pool, so the gateway sees a bounded load.
        self._pool = ThreadPoolExecutor(
            max_workers=self.options.parallel_pages * 4, thread_name_prefix="api-page"
        )

    def close(self) -> None:
        """End every request under way at once; release the connection pool and page threads.

        Requests started afterwards end at once too, as timeouts.
        """
        self._watchdog.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._adapter.close()

    def fetch_tasks(
        self,
        project_id: str,
        *,
        is_dcdn: bool,
        begin: int,
        end: int,
        deadline: Deadline,
        on_page: Callable[[list[TaskInfo]], None] | None = None,
    ) -> TaskWindow:
        """Every task created in ``[begin, end]``, paging until a page comes back short.

        The first page is asked for alone, so a small account costs one request; the
        pages its ``TotalCount`` promises then come ``parallel_pages`` at a time (with one
        more to confirm the end when the last promised page would be full). TotalCount is
        only a hint (the provider's own example gets it wrong): while pages keep coming
        back full, paging goes on, and the first short page ends it.

        ``on_page``, if given, is called in this thread with each page's new tasks, in
        page order, as soon as the pages before it are in, while later pages are still
        on the wire.
        """
        base = _query(project_id, is_dcdn, begin, end, self.options.page_size)
        limits = _CollectionDeadline(
            deadline.at, deadline.clock, _ByteBudget(self.options.max_collection_bytes)
        )
        try:
            return self._fetch_window(base, limits, _WindowBuilder(on_page))
        except ApiError as error:
            # A page's error is raised again from its future in frames that hold that
            # future (the paging loop here, the collector's wait): error -> traceback ->
            # frame -> future -> error is a cycle, which the raised gc threshold (cli)
            # leaves for many scrapes. Cut from the frames that hold the pages read, the
            # error keeps none of them alive, in a cycle or not.
            raise error.with_traceback(None) from None

    def _fetch_window(
        self, base: dict[str, ParamValue], deadline: Deadline, window: "_WindowBuilder"
    ) -> TaskWindow:
        first = self._fetch_page(base, 0, deadline)
        if len(first.tasks) >= self.options.page_size:
            self._fetch_rest(base, first, deadline, window)
        else:
            window.add(first.tasks)
        return window.build(first.total_count)

    def count_tasks(
        self, project_id: str, *, is_dcdn: bool, begin: int, end: int, deadline: Deadline
    ) -> int:
        """One signed request: how many tasks the gateway counts in ``[begin, end]``."""
        answer = self._call(_query(project_id, is_dcdn, begin, end, 1), deadline)
        return len(answer.task_list) if answer.total_count is None else answer.total_count

    def _fetch_rest(
        self,
        base: dict[str, ParamValue],
        first: _Page,
        deadline: Deadline,
        window: "_WindowBuilder",
    ) -> None:
        """Page 0, then 1, 2, ... up to the first short one, ``parallel_pages`` in flight.

        A page is asked for as soon as a slot frees, not window by window, so one slow
        answer holds up only its own slot. Pages are asked for up to the promised ones
        (plus one when they would all be full); if the last of them is full too,
        TotalCount was too low and the limit moves a window past it. A too-high
        TotalCount costs at most the pages in flight when the short page arrives; a
        too-low one at most a window. Pages go to ``window`` in order as they complete,
        after the freed slots are filled again.
        """
        paging = _Paging(first, self.options.page_size)
        in_flight: dict[Future[_Page], int] = {}
        try:
            while True:
                while len(in_flight) < self.options.parallel_pages and paging.wanted(
                    self.options.max_pages
                ):
                    offset = paging.next_index * self.options.page_size
                    future = self._pool.submit(self._fetch_page, base, offset, deadline)
                    in_flight[future] = paging.take_next()
                for page in paging.take_ready():
                    window.add(page.tasks)
                if paging.complete:
                    return
                if not in_flight:
                    raise ApiError(
                        "invalid_response", f"more than {self.options.max_pages} pages of tasks"
                    )
                done, _ = wait(in_flight, timeout=deadline.remaining(), return_when=FIRST_COMPLETED)
                if not done:
                    raise ApiError("timeout", "pages not answered within the deadline")
                for future in done:
                    paging.receive(
                        in_flight.pop(future), future.result(), self.options.parallel_pages
                    )
        finally:
            # Pages past the short one, or after a failure, are not needed: those not
            # started are dropped, those under way are waited for, so that no request of
            # this collection is still running, or not yet counted, once it returns.
            for future in in_flight:
                future.cancel()
            wait(in_flight, timeout=deadline.remaining())

    def _fetch_page(self, base: dict[str, ParamValue], offset: int, deadline: Deadline) -> _Page:
        answer = self._call({**base, "Offset": offset}, deadline)
        return _Page(answer.task_list, answer.total_count)

    def _call(self, params: dict[str, ParamValue], deadline: Deadline) -> TaskListResponse:
        """One API call with bounded retries; every attempt is counted by its outcome."""
        form = signed_form(params, self._public_key, self._private_key.get_secret_value())
        attempt = 0
        while True:
            try:
                answer = self._attempt(form, deadline)
            except _RetryableError as retryable:
                self.stats.record(retryable.error.reason)
                wait = self._backoff(attempt, retryable.retry_after)
                if attempt >= self.options.max_retries or wait >= deadline.remaining():
                    raise retryable.error from None
                self._sleep(wait)
                attempt += 1
            except ApiError as error:
                self.stats.record(error.reason)
                raise
            else:
                self.stats.record("ok")
                return answer

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        # Full jitter: replicas retrying together must not hit the gateway in step.
        jittered = random.uniform(0, min(_BACKOFF_CAP_SECONDS, _BACKOFF_BASE_SECONDS * 2**attempt))
        return max(jittered, retry_after or 0.0)

    def _attempt(self, form: dict[str, str], deadline: Deadline) -> TaskListResponse:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise ApiError("timeout", "no time left in the scrape's deadline")
        # The watchdog ends the exchange at the deadline; the socket timeout still bounds
        # each connect and read, as the request timeout promises.
        with self._watchdog.guard(remaining) as guard:
            try:
                body = self._exchange(form, deadline, min(self.options.request_timeout, remaining))
            except Exception:
                # Whatever the shutdown broke (a read, a parse, a send) is the deadline's doing.
                if guard.fired:
                    raise _ended(deadline) from None
                raise
            # A shutdown can also pass for the end of an answer (a status line or a
            # trailer cut short reads as complete): nothing read after it is trusted.
            if guard.fired:
                raise _ended(deadline)
        return _decode(body, form["Signature"], self._private_key.get_secret_value())

    def _exchange(self, form: dict[str, str], deadline: Deadline, timeout: float) -> bytes:
        """Send one request and read its answer's body; the caller's guard bounds it all."""
        try:
            request = self._request.copy()
            # Encoded here: requests' own form encoding checks each value's type, per page.
            request.prepare_body(urlencode(form), None)
            # Never a redirect: an adapter does not follow them, and a 3xx is an HTTP error.
            response = self._adapter.send(
                request, stream=True, timeout=(timeout, timeout), verify=self._verify
            )
        except requests.Timeout:
            raise ApiError("timeout", f"no answer within {timeout:.1f}s") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as error:
            raise _RetryableError(ApiError("connection_error", _describe(error)), None) from None
        except requests.RequestException as error:
            raise ApiError("connection_error", _describe(error)) from None
        with response:
            status = response.status_code
            if status in _RETRY_STATUSES:
                retry_after = _retry_after(response.headers.get("Retry-After"))
                raise _RetryableError(ApiError("http_error", f"HTTP {status}"), retry_after)
            if status != 200:
                raise ApiError("http_error", f"HTTP {status}")
            return self._read_body(response, deadline)

    def _read_body(self, response: requests.Response, deadline: Deadline) -> bytes:
        """Read the whole body, but never past the size caps.

        The deadline is the watchdog's to enforce; the socket timeout bounds each read.
        Every byte counts against the answer's cap and the collection's budget. A reset
        or close mid-body is a connection error worth retrying, as at connect time.
        """
        limit = self.options.max_response_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError("invalid_response", f"answer of {declared} bytes exceeds {limit}")
        budget = deadline.budget if isinstance(deadline, _CollectionDeadline) else None
        raw = response.raw
        sock = getattr(raw.connection, "sock", None)
        if sock is not None:  # the headers were read with the time left at the start
            sock.settimeout(self.options.request_timeout)
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                chunk = raw.read1(_READ_CHUNK, decode_content=True)
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > limit:
                    raise ApiError("invalid_response", f"answer exceeds {limit} bytes")
                if budget is not None:
                    budget.spend(len(chunk))
                chunks.append(chunk)
        except (TimeoutError, urllib3.exceptions.TimeoutError):
            raise ApiError("timeout", f"no data for {self.options.request_timeout:.1f}s") from None
        except ApiError:
            raise  # a size cap's, as it is
        except (
            OSError,
            urllib3.exceptions.ProtocolError,
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
        ) as error:
            failure = ApiError("connection_error", _describe(error))
            raise _RetryableError(failure, None) from None
        except Exception as error:  # urllib3's decoding errors share no base class
            raise ApiError("invalid_response", _describe(error)) from None


def _ended(deadline: Deadline) -> ApiError:
    """The error of a request that the watchdog ended: its deadline, or the client's close."""
    if deadline.expired:
        return ApiError("timeout", "exchange not finished within the deadline, connection closed")
    return ApiError("timeout", "request ended: the client is closing")


class _ByteBudget:
    """The bytes that one collection's answers may still use, shared by its page threads."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def spend(self, size: int) -> None:
        """Count ``size`` bytes read; past the limit, the collection fails."""
        with self._lock:
            self._used += size
            exceeded = self._used > self._limit
        if exceeded:
            raise ApiError(
                "invalid_response",
                f"answers exceed max_collection_bytes ({self._limit} bytes) for one collection",
            )


@dataclass(frozen=True)
class _CollectionDeadline(Deadline):
    """A collection's deadline, carrying the byte budget its pages share down to each read.

    It travels through the paging and retry code as the deadline it is, so that neither
    needs to know of the budget.
    """

    budget: _ByteBudget | None = field(default=None, compare=False)


class _Paging:
    """Which pages to ask for next, and when the pages received are complete."""

    def __init__(self, first: _Page, page_size: int) -> None:
        total_count = first.total_count
        promised = math.ceil(total_count / page_size) if total_count and total_count > 0 else 1
        # When the promised pages would all be full, one more confirms the end; page 0
        # came back full, so page 1 is wanted whatever TotalCount says.
        confirm = 1 if not total_count or total_count % page_size == 0 else 0
        self.limit = max(2, promised + confirm)  # ask for pages below this index
        self.page_size = page_size
        self.next_index = 1  # page 0 was asked for alone
        # Page 0 is taken after the first requests for the others are under way.
        self.pages: dict[int, _Page] = {0: first}  # received, not yet taken
        self.taken = 0  # the next page to take, in order
        self.end: int | None = None  # index of the first short page

    def wanted(self, max_pages: int) -> bool:
        """Whether another page should be asked for now."""
        return self.end is None and self.next_index < min(self.limit, max_pages)

    def take_next(self) -> int:
        index = self.next_index
        self.next_index += 1
        return index

    def receive(self, index: int, page: _Page, window: int) -> None:
        """Record a page; move the limit on when every page asked for came back full."""
        self.pages[index] = page
        if len(page.tasks) < self.page_size and (self.end is None or index < self.end):
            self.end = index
        if self.end is None and all(
            i < self.taken or i in self.pages for i in range(1, self.limit)
        ):
            self.limit += window  # TotalCount was too low

    def take_ready(self) -> list[_Page]:
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


class _RetryableError(Exception):
    def __init__(self, error: ApiError, retry_after: float | None) -> None:
        super().__init__(error.detail)
        self.error = error
        self.retry_after = retry_after


def _query(
    project_id: str, is_dcdn: bool, begin: int, end: int, limit: int
) -> dict[str, ParamValue]:
    query: dict[str, ParamValue] = {
        "Action": ACTION,
        "BeginTime": begin,
        "EndTime": end,
        "IsDcdn": is_dcdn,
        "Limit": limit,
    }
    if project_id:  # an empty ProjectId means the default project: leave it out
        query["ProjectId"] = project_id
    return query


def _decode(body: bytes, *secrets: str) -> TaskListResponse:
    try:
        answer = decode_response(body)
    except InvalidResponseError as error:
        raise ApiError("invalid_response", str(error)[:_DETAIL_LIMIT]) from None
    if answer.ret_code != 0:
        message = _scrub(answer.message, *secrets)
        raise ApiError("api_error", f"RetCode {answer.ret_code}: {message}"[:_DETAIL_LIMIT])
    return answer


class _WindowBuilder:
    """Pages merged in order, each TaskId kept at its first sighting.

    Paging a set that changes meanwhile repeats tasks. Each page's new tasks are handed
    on as the page is added.
    """

    def __init__(self, on_page: Callable[[list[TaskInfo]], None] | None) -> None:
        self._on_page = on_page
        self._seen: set[str] = set()
        self._tasks: list[TaskInfo] = []
        self._duplicates = 0
        self._pages = 0

    def add(self, page: list[TaskInfo]) -> None:
        """Add the next page in order."""
        new: list[TaskInfo] = []
        for task in page:
            task_id = task.task_id
            if task_id is not None:
                if task_id in self._seen:
                    self._duplicates += 1
                    continue
                self._seen.add(task_id)
            new.append(task)
        self._tasks.extend(new)
        self._pages += 1
        if self._on_page is not None:
            self._on_page(new)

    def build(self, total_count: int | None) -> TaskWindow:
        """The window of every page added."""
        return TaskWindow(self._tasks, self._duplicates, total_count, self._pages)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _describe(error: BaseException) -> str:
    """A short, secret-free description of a transport error.

    requests and urllib3 put URLs, and sometimes request details, in their messages;
    we send no secret in the URL, but name only the exception's kind and its root cause.
    """
    cause: BaseException = error
    while cause.__context__ is not None and cause.__context__ is not cause:
        cause = cause.__context__
    kind = type(error).__name__
    if isinstance(cause, OSError) and cause.strerror:
        return f"{kind}: {cause.strerror}"
    root = type(cause).__name__
    return kind if root == kind else f"{kind} ({root})"


def _scrub(text: str, *secrets: str) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text
