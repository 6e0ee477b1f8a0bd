"""The API client: signed requests, bounded retries and paging, each within a scrape's deadline.

It knows nothing of metrics: it returns validated tasks or raises :class:`ApiError`
with a reason, and keeps plain counts of its requests by outcome for whoever wants them.
Requests are POST form bodies, as the official SDKs send them, so that the signed
parameters never appear in a URL, a proxy's access log or an exception message.
"""

import logging
import math
import random
import re
import threading
import time
from collections import Counter, deque
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
from exporter.model import (
    PREFETCH_ACTION,
    InvalidResponseError,
    TaskInfo,
    TaskListResponse,
    decode_response,
)
from exporter.signature import ParamValue, signed_form
from exporter.watchdog import GuardedAdapter, Watchdog

ACTION: Final = PREFETCH_ACTION
Outcome = Literal[
    "ok",
    "http_error",
    "timeout",
    "connection_error",
    "api_error",
    "invalid_response",
    "rate_limited",
]
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)

_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
# The gateway's own "try again" codes (see the API's RetCode table): 153 is its rate
# limit; 110 (the API timed out) and 130/150 (gateway or auth service fault) are
# passing faults of the service. Everything else (signature, project, IAM) would fail
# the same way on a retry.
_RET_RATE_LIMITED: Final = 153
_RETRY_RET_CODES: Final = frozenset({110, 130, 150, _RET_RATE_LIMITED})
# Retry-After is the gateway's say; past this it only means "not within this scrape".
_RETRY_AFTER_CAP_SECONDS: Final = 3600.0
_RETRY_AFTER_DIGITS: Final = re.compile(r"[0-9]{1,10}")
# The gateway's request id is logged as is: only a conservative alphabet gets through.
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_REQUEST_ID_HEADER: Final = "X-UCLOUD-REQUEST-UUID"
_BACKOFF_BASE_SECONDS: Final = 0.2
_BACKOFF_CAP_SECONDS: Final = 5.0
_READ_CHUNK: Final = 1024 * 1024
_DETAIL_LIMIT: Final = 200
_MESSAGE_LIMIT: Final = 120
# A SHA-1 signature is 40 hex digits; a run of at least that many in a gateway's text
# is redacted whatever it is, so that no signature, however old, gets through in any case.
_HEX_RUN: Final = re.compile(r"[0-9A-Fa-f]{40,}")
_SIGNATURE_LENGTH: Final = 40
_REMEMBERED_SIGNATURES: Final = 4096
_REDACTED: Final = "<redacted>"

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request or a collection failed; ``reason`` is one of :data:`OUTCOMES` other than ok.

    ``request_id`` is the gateway's ``X-UCLOUD-REQUEST-UUID`` of the answer that failed,
    what the provider's support asks for; None without an answer, or when the header
    held anything but a plain id.
    """

    def __init__(self, reason: Outcome, detail: str, request_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Outcome = reason
        self.detail = detail
        self.request_id = request_id


class SignatureMemory:
    """The signatures the client made lately, to redact them wherever they turn up.

    A gateway may echo any signature it received, in any case, in any later answer; a
    log filter needs to know them all. Bounded: the oldest are forgotten first, by
    which time no gateway still holds their requests. Safe to use from many threads.
    """

    def __init__(self, capacity: int = _REMEMBERED_SIGNATURES) -> None:
        self._order: deque[str] = deque()
        self._known: set[str] = set()
        self._capacity = capacity
        self._lock = threading.Lock()

    def remember(self, signature: str) -> None:
        """Add one signature (hex, any case)."""
        signature = signature.lower()
        with self._lock:
            if signature in self._known:
                return
            self._order.append(signature)
            self._known.add(signature)
            if len(self._order) > self._capacity:
                self._known.discard(self._order.popleft())

    def __contains__(self, signature: object) -> bool:
        return isinstance(signature, str) and signature.lower() in self._known

    def redact(self, text: str) -> str:
        """``text`` with every hex run that holds a remembered signature replaced."""
        return _HEX_RUN.sub(self._redact_run, text)

    def _redact_run(self, match: re.Match[str]) -> str:
        run = match.group().lower()
        with self._lock:
            known = any(
                run[start : start + _SIGNATURE_LENGTH] in self._known
                for start in range(len(run) - _SIGNATURE_LENGTH + 1)
            )
        return _REDACTED if known else match.group()


SIGNATURES: Final = SignatureMemory()
"""Every signature any client of this process made lately: the log filter's list."""


class RateLimit:
    """A client-side cap on requests per second, shared by every target and thread.

    Requests are spaced ``1/rate`` seconds apart: each takes the next free slot, so
    that a fleet of replicas can stay under the gateway's limit (RetCode 153). A
    request whose slot would come after its deadline takes none and fails at once.
    ``rate`` 0 means no limit.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._next_free = -math.inf
        self._lock = threading.Lock()

    def reserve(self, deadline: Deadline) -> float:
        """Take the next slot; return the seconds to wait for it, or raise a timeout."""
        if not self._interval:
            return 0.0
        with self._lock:
            now = self._clock()
            wait = max(0.0, self._next_free - now)
            if wait >= deadline.remaining():
                raise ApiError(
                    "timeout",
                    f"the client's own rate limit leaves no slot within the deadline "
                    f"(next in {wait:.1f}s)",
                )
            self._next_free = now + wait + self._interval
        return wait


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
    max_requests_per_second: float = 0.0


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
        self._rate_limit = RateLimit(self.options.max_requests_per_second)

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
        action: str = PREFETCH_ACTION,
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
        base["Action"] = action
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

        A page that fails fails the collection only once it is known to be needed: a
        too-high TotalCount sends requests past the end, and a gateway that errs on an
        offset beyond its data must not take down a target whose pages all came in.
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
                needed = paging.needed_failure()
                if needed is not None:
                    raise needed
                if not in_flight:
                    raise ApiError(
                        "invalid_response", f"more than {self.options.max_pages} pages of tasks"
                    )
                done, _ = wait(in_flight, timeout=deadline.remaining(), return_when=FIRST_COMPLETED)
                if not done:
                    raise ApiError("timeout", "pages not answered within the deadline")
                for future in done:
                    index = in_flight.pop(future)
                    try:
                        page = future.result()
                    except ApiError as error:
                        paging.fail(index, error)
                    else:
                        paging.receive(index, page, self.options.parallel_pages)
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
        """One API call with bounded retries; every attempt is counted by its outcome.

        Each attempt first takes a slot of the client's rate limit, within the deadline.
        """
        form = signed_form(params, self._public_key, self._private_key.get_secret_value())
        SIGNATURES.remember(form["Signature"])
        attempt = 0
        while True:
            try:
                self._wait_for_slot(deadline)
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

    def _wait_for_slot(self, deadline: Deadline) -> None:
        wait = self._rate_limit.reserve(deadline)
        if wait > 0:
            self._sleep(wait)

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
                body, request_id = self._exchange(
                    form, deadline, min(self.options.request_timeout, remaining)
                )
            except Exception:
                # Whatever the shutdown broke (a read, a parse, a send) is the deadline's doing.
                if guard.fired:
                    raise _ended(deadline) from None
                raise
            # A shutdown can also pass for the end of an answer (a status line or a
            # trailer cut short reads as complete): nothing read after it is trusted.
            if guard.fired:
                raise _ended(deadline)
        return _decode(body, request_id, self._private_key.get_secret_value())

    def _exchange(
        self, form: dict[str, str], deadline: Deadline, timeout: float
    ) -> tuple[bytes, str | None]:
        """Send one request; its answer's body and request id. The caller's guard bounds it."""
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
            request_id = _request_id(response.headers.get(_REQUEST_ID_HEADER))
            if status in _RETRY_STATUSES:
                retry_after = _retry_after(response.headers.get("Retry-After"))
                http_error = ApiError("http_error", f"HTTP {status}", request_id)
                raise _RetryableError(http_error, retry_after)
            if status != 200:
                raise ApiError("http_error", f"HTTP {status}", request_id)
            try:
                return self._read_body(response, deadline), request_id
            except ApiError as error:  # a body cut short or too large: support wants the id
                error.request_id = request_id
                raise
            except _RetryableError as retryable:
                retryable.error.request_id = request_id
                raise

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
        # Pages whose request failed, held until it is known whether they are needed.
        self.failed: dict[int, ApiError] = {}

    def wanted(self, max_pages: int) -> bool:
        """Whether another page should be asked for now.

        Not after a failure: either the failed page is needed, and the collection
        fails, or the end comes before it, and the pages after it are not needed either.
        """
        return self.end is None and not self.failed and self.next_index < min(self.limit, max_pages)

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
        index = self.next_index
        self.next_index += 1
        return index

    def receive(self, index: int, page: _Page, window: int) -> None:
        """Record a page; move the limit on when every page asked for came back full."""
        self.pages[index] = page
        if len(page.tasks) < self.page_size and (self.end is None or index < self.end):
            self.end = index
            self.failed = {i: error for i, error in self.failed.items() if i < index}
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


def _decode(body: bytes, request_id: str | None, *secrets: str) -> TaskListResponse:
    """The answer in ``body``, or the :class:`ApiError` it stands for (retryable or not)."""
    try:
        answer = decode_response(body)
    except InvalidResponseError as error:
        detail = _scrub(str(error), *secrets)[:_DETAIL_LIMIT]
        raise ApiError("invalid_response", detail, request_id) from None
    code = answer.ret_code
    if code == 0:
        return answer
    # The message is the gateway's text and is logged at warning: printable, short, scrubbed.
    message = _scrub(answer.message or "", *secrets)[:_MESSAGE_LIMIT]
    reason: Outcome = "rate_limited" if code == _RET_RATE_LIMITED else "api_error"
    failure = ApiError(reason, f"RetCode {code}: {message}"[:_DETAIL_LIMIT], request_id)
    if code in _RETRY_RET_CODES:
        raise _RetryableError(failure, None)
    raise failure


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
    """Seconds to wait from a ``Retry-After`` header, at most an hour; None if unusable.

    Only what RFC 9110 allows: ASCII digits (``str.isdigit`` would take ``²``, which
    ``float`` rejects), or an HTTP date. Anything else is ignored, as if absent.
    """
    text = (value or "").strip(" \t")
    if not text or not text.isascii():
        return None
    if _RETRY_AFTER_DIGITS.fullmatch(text):
        return min(float(text), _RETRY_AFTER_CAP_SECONDS)
    if text.isdigit():  # more digits than any sane wait: as long as we ever wait
        return _RETRY_AFTER_CAP_SECONDS
    try:
        when = parsedate_to_datetime(text)
        seconds = when.timestamp() - time.time()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    if when.tzinfo is None or not math.isfinite(seconds):  # HTTP dates are GMT, always
        return None
    return min(max(0.0, seconds), _RETRY_AFTER_CAP_SECONDS)


def _request_id(value: str | None) -> str | None:
    """The gateway's request id if it is a plain id; anything else is gateway text, dropped."""
    if value is None:
        return None
    value = value.strip(" \t")
    return value if _REQUEST_ID.fullmatch(value) else None


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
    """Gateway text made fit for a log line: printable, and free of any secret in any case.

    Every run of 40 or more hex digits goes, not only the signatures we know: a
    gateway may echo a request's signature in any case, from any earlier page.
    """
    text = "".join(char if char.isprintable() else "?" for char in text)
    for secret in secrets:
        if secret:
            text = re.sub(re.escape(secret), _REDACTED, text, flags=re.IGNORECASE)
    return _HEX_RUN.sub(_REDACTED, text)
