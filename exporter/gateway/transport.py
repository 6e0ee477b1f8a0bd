"""One signed API call: the HTTP exchange, bounded reads, retries and backoff, the rate limit.

Requests are POST form bodies, as the official SDKs send them, so that the signed
parameters never appear in a URL, a proxy's access log or an exception message. Every
attempt is counted by action and outcome; every answer is decoded into the shape its
action returns, and a ``RetCode`` other than 0 becomes an :class:`ApiError`.
"""

import logging
import math
import random
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Final, TypeVar, overload
from urllib.parse import urlencode

import certifi
import requests
import urllib3
from pydantic import SecretStr

from exporter.gateway.allocator import return_large_buffers
from exporter.gateway.answers import Answer, InvalidResponseError, TaskListResponse, decode_answer
from exporter.gateway.budgets import CollectionDeadline, RateLimit
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError, Outcome, RequestStats
from exporter.gateway.redaction import SIGNATURES, describe, redirect_target, scrub
from exporter.gateway.signature import ParamValue, signed_form
from exporter.gateway.watchdog import GuardedAdapter, Watchdog
from exporter.settings.config import Settings
from exporter.version import __version__

log = logging.getLogger(__name__)

_Result = TypeVar("_Result")
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


def _setting_default(name: str) -> Any:
    # The settings own every default, so that a client built without them cannot drift.
    return Settings.model_fields[name].default


_DEFAULT_CA_BUNDLE: Final[Path | None] = _setting_default("ca_bundle")


@dataclass(frozen=True)
class ClientOptions:
    """How the client talks to the gateway; each default is its setting's default."""

    page_size: int = _setting_default("page_size")
    max_pages: int = _setting_default("max_pages")
    parallel_pages: int = _setting_default("parallel_pages")
    request_timeout: float = _setting_default("request_timeout_seconds")
    max_retries: int = _setting_default("max_retries")
    max_response_bytes: int = _setting_default("max_response_bytes")
    max_collection_bytes: int = _setting_default("max_collection_bytes")
    ca_bundle: Path | None = _DEFAULT_CA_BUNDLE
    max_requests_per_second: float = _setting_default("max_api_requests_per_second")


class Transport:
    """Signed calls to one gateway, each retried within its deadline and counted.

    HTTP is a requests ``Session``: its pool keeps connections to the gateway alive (and
    replaces one the gateway closed while idle), and proxies come from the environment
    (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, either case; SOCKS is
    refused, see :class:`~exporter.gateway.watchdog.GuardedAdapter`). Whom TLS trusts is a
    setting, ``CA_BUNDLE``, else certifi's bundle: never ``REQUESTS_CA_BUNDLE`` or
    ``CURL_CA_BUNDLE``. Each call is a prepared request sent through the session's adapter
    (requests' transport-adapter API), which follows no redirect (a 3xx is an HTTP error)
    and keeps no cookie: every call stands alone, as signed, and costs none of the
    session-level merging that a call through ``Session.post`` repeats every time. Retries
    are ours, bounded by the deadline; urllib3's are off, as they know no deadline. Its
    connections hand their sockets to the watchdog
    (:class:`~exporter.gateway.watchdog.GuardedAdapter`), which ends a request at its
    deadline whatever part of the exchange it is in.
    """

    def __init__(
        self,
        api_url: str,
        public_key: str,
        private_key: SecretStr,
        *,
        options: ClientOptions,
        stats: RequestStats,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._public_key = public_key
        self._private_key = private_key
        self._options = options
        self._stats = stats
        self._sleep = sleep
        self._watchdog = Watchdog()
        return_large_buffers()  # answers are read whole: their memory must go back when freed
        # As many kept-alive connections as page threads (see ApiClient).
        adapter = GuardedAdapter(pool_maxsize=options.parallel_pages * 4, max_retries=0)
        self._session = requests.Session()
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._adapter = adapter
        # Identity: the caps count what the gateway sends. An answer compressed all the same
        # is decompressed a read at a time (bounded since urllib3 2.6), each read counted.
        # Every call is a POST form, encoded once by urlencode (as requests would encode a
        # dict, without its per-call walk over the form).
        self._session.headers.update(
            {
                "User-Agent": f"ucdn-prefetch-exporter/{__version__}",
                "Accept-Encoding": "identity",
                "Content-Type": "application/x-www-form-urlencoded",
            }
        )
        # The proxy variables are read once, here, by requests' own rules for the one URL
        # this session calls (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY, either case);
        # then trust_env is off, so that no call reads the environment and ~/.netrc again
        # (a third of a call's CPU, about 0.5 ms), and neither ~/.netrc nor
        # REQUESTS_CA_BUNDLE can change what a signed call sends or whom it trusts.
        self._session.trust_env = False
        self._session.proxies = requests.utils.get_environ_proxies(api_url)
        # Every call is a POST of a form to this one URL with these headers: prepared once,
        # copied per call with its own body (a tenth of a call's CPU, the URL's parsing).
        self._prepared = requests.Request("POST", api_url, headers=self._session.headers).prepare()
        self._verify = str(options.ca_bundle) if options.ca_bundle else certifi.where()
        self._rate_limit = RateLimit(options.max_requests_per_second)

    def close(self) -> None:
        """End every request under way at once and release the connections.

        Requests started afterwards end at once too, as timeouts.
        """
        self._watchdog.close()
        self._session.close()

    def call(
        self, params: dict[str, ParamValue], deadline: Deadline, shape: type[Answer]
    ) -> Answer:
        """One API call (``params`` name its ``Action``) with bounded retries.

        Every attempt is counted by its action and outcome, and first takes a slot of
        the client's rate limit, within the deadline.
        """
        return self.call_then(params, deadline, shape, _unchanged)

    def call_then(
        self,
        params: dict[str, ParamValue],
        deadline: Deadline,
        shape: type[Answer],
        then: Callable[[Answer], _Result],
    ) -> _Result:
        """:meth:`call`, with ``then`` finishing the decoding of a successful answer: an
        :class:`InvalidResponseError` it raises makes the answer invalid, as one of the
        shape would (counted, scrubbed, not retried)."""
        action = str(params["Action"])
        form = signed_form(params, self._public_key, self._private_key.get_secret_value())
        SIGNATURES.remember(form["Signature"])
        attempt = 0
        while True:
            try:
                self._wait_for_slot(deadline)
                answer = self._attempt(form, deadline, shape, then)
            except _RetryableError as retryable:
                failure, retry_after = retryable.error, retryable.retry_after
            except ApiError as error:
                self._count(action, error.reason)
                raise
            else:
                self._stats.record(action, "ok")
                return answer
            self._count(action, failure.reason)
            wait = self._backoff(attempt, retry_after)
            if attempt >= self._options.max_retries or wait >= deadline.remaining():
                # Outside the handler, detached: it carries neither the attempt's traceback
                # (its frames hold the answer read so far) nor a cycle through this frame.
                raise failure.detached()
            self._sleep(wait)
            attempt += 1

    @property
    def pace(self) -> float:
        """The requests per second the rate limit allows now (0: no limit)."""
        return self._rate_limit.pace

    def _count(self, action: str, outcome: Outcome) -> None:
        """Count a failed attempt; a refusal for the gateway's rate lowers the pace."""
        self._stats.record(action, outcome)
        if outcome != "rate_limited":
            return
        pace = self._rate_limit.refused()
        if pace is not None:
            log.warning(
                "the gateway refused a request for its rate (RetCode 153): pace lowered",
                extra={
                    "fields": {
                        "action": action,
                        "pace_requests_per_second": round(pace, 3),
                        "configured_requests_per_second": self._rate_limit.configured,
                    }
                },
            )

    def _wait_for_slot(self, deadline: Deadline) -> None:
        """Take a slot of the rate limit and wait for it, then for the request before this
        one to have gone (see :class:`~exporter.gateway.budgets.RateLimit`)."""
        wait = self._rate_limit.reserve(deadline)
        if wait > 0:
            self._sleep(wait)
        while (wait := self._rate_limit.hold(deadline)) > 0:
            self._sleep(wait)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        # Full jitter: replicas retrying together must not hit the gateway in step.
        jittered = random.uniform(0, min(_BACKOFF_CAP_SECONDS, _BACKOFF_BASE_SECONDS * 2**attempt))
        return max(jittered, retry_after or 0.0)

    def _attempt(
        self,
        form: dict[str, str],
        deadline: Deadline,
        shape: type[Answer],
        then: Callable[[Answer], _Result],
    ) -> _Result:
        if deadline.expired:
            raise ApiError("timeout", "no time left in the scrape's deadline")
        # The watchdog ends the exchange after the request timeout, or at the deadline if
        # that comes first (it may move later meanwhile): however the gateway's bytes
        # arrive, no exchange outlives either.
        timeout = self._options.request_timeout
        cut_at = time.monotonic() + timeout
        with self._watchdog.guard(
            lambda: min(cut_at - time.monotonic(), deadline.remaining())
        ) as guard:
            try:
                body, request_id = self._exchange(form, deadline, timeout)
            except Exception:
                # Whatever the shutdown broke (a read, a parse, a send) is the watchdog's doing.
                if guard.fired:
                    raise self._ended(deadline, timeout) from None
                raise
            # A shutdown can also pass for the end of an answer (a status line or a
            # trailer cut short reads as complete): nothing read after it is trusted.
            if guard.fired:
                raise self._ended(deadline, timeout)
        secret = self._private_key.get_secret_value()
        answer = _decode(body, request_id, secret, shape=shape)
        try:
            return then(answer)
        except InvalidResponseError as error:
            raise _invalid(error, request_id, secret) from None

    def _ended(self, deadline: Deadline, timeout: float) -> ApiError:
        """The error of a request that the watchdog ended: the client's close, the deadline,
        or the request timeout."""
        if self._watchdog.closed:
            return ApiError("timeout", "request ended: the client is closing")
        if deadline.expired:
            return ApiError(
                "timeout", "exchange not finished within the deadline, connection closed"
            )
        return ApiError(
            "timeout", f"exchange not finished within {timeout:.1f}s, connection closed"
        )

    def _exchange(
        self, form: dict[str, str], deadline: Deadline, timeout: float
    ) -> tuple[bytes, str | None]:
        """Send one request; its answer's body and request id. The caller's guard bounds it."""
        try:
            prepared = self._prepared.copy()  # the session's headers, no cookies
            prepared.prepare_body(urlencode(form), None)
            response = self._adapter.send(
                prepared,
                stream=True,
                timeout=(timeout, timeout),
                verify=self._verify,
                proxies=self._session.proxies,
            )
        except requests.Timeout as error:
            _let_go(error)
            raise ApiError("timeout", f"no answer within {timeout:.1f}s") from None
        except requests.ConnectionError as error:
            # Refused, reset, closed, DNS, TLS, the proxy; a status line or headers not HTTP.
            failure = ApiError("connection_error", _let_go(error))
            raise _RetryableError(failure, None) from None
        except requests.RequestException as error:
            raise ApiError("connection_error", _let_go(error)) from None
        # Closed unread, the connection is closed; read to the end, it went back to the pool.
        with response:
            status = response.status_code
            secret = self._private_key.get_secret_value()
            request_id = _request_id(response.headers.get(_REQUEST_ID_HEADER), secret)
            if status in _RETRY_STATUSES:
                retry_after = _retry_after(response.headers.get("Retry-After"))
                http_error = ApiError("http_error", f"HTTP {status}", request_id)
                raise _RetryableError(http_error, retry_after)
            if status != 200:
                target = redirect_target(response.headers.get("Location"), secret)
                redirect = f", redirects to {target}" if target and 300 <= status < 400 else ""
                raise ApiError("http_error", f"HTTP {status}{redirect}", request_id)
            try:
                return self._read_body(response, deadline, timeout), request_id
            except (ApiError, _RetryableError) as error:
                # A body cut short or too large: support wants the request id.
                (error if isinstance(error, ApiError) else error.error).request_id = request_id
                raise

    def _read_body(self, response: requests.Response, deadline: Deadline, timeout: float) -> bytes:
        """Read the whole body, but never past the size caps.

        The deadline is the watchdog's to enforce; the read timeout bounds each read.
        Every byte counts against the answer's cap and the collection's budget. A reset
        or close mid-body, or a body shorter than its Content-Length, is a connection
        error worth retrying, as at connect time. urllib3's ``read`` leaves the chunked
        framing to http.client, which bounds each chunk-size and trailer line.
        """
        limit = self._options.max_response_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError("invalid_response", f"answer of {declared} bytes exceeds {limit}")
        budget = deadline.budget if isinstance(deadline, CollectionDeadline) else None
        chunks: list[bytes] = []
        size = 0
        try:
            # Decoded only when the gateway encoded it all the same: an identity body read
            # through urllib3's decoding buffer is copied twice more, for nothing.
            decode = bool(response.headers.get("Content-Encoding"))
            while chunk := response.raw.read(_READ_CHUNK, decode_content=decode):
                size += len(chunk)
                if size > limit:
                    raise ApiError("invalid_response", f"answer exceeds {limit} bytes")
                if budget is not None:
                    budget.spend(len(chunk))
                chunks.append(chunk)
        except urllib3.exceptions.ReadTimeoutError as error:
            _let_go(error)
            raise ApiError("timeout", f"no data for {timeout:.1f}s") from None
        except ApiError:
            raise  # a size cap's, as it is
        except (OSError, urllib3.exceptions.ProtocolError, urllib3.exceptions.SSLError) as error:
            failure = ApiError("connection_error", _let_go(error))
            raise _RetryableError(failure, None) from None
        except Exception as error:  # urllib3's decoding errors share no base class with these
            raise ApiError("invalid_response", _let_go(error)) from None
        return b"".join(chunks)


def _let_go(error: BaseException) -> str:
    """``describe(error)``, once the frames of its traceback have let go of their locals.

    urllib3 raises through ``contextlib.contextmanager`` blocks, whose ``__exit__`` frame
    keeps the exception it raised (Python 3.13): a cycle through the traceback that holds
    every frame of the exchange, the answer's buffers with them, until the cycle collector
    runs. Cleared here, the error goes with the last reference to it.
    """
    traceback.clear_frames(error.__traceback__)
    return describe(error)


class _RetryableError(Exception):
    def __init__(self, error: ApiError, retry_after: float | None) -> None:
        super().__init__(error.detail)
        self.error = error
        self.retry_after = retry_after


@overload
def _decode(body: bytes, request_id: str | None, *secrets: str) -> TaskListResponse: ...


@overload
def _decode(body: bytes, request_id: str | None, *secrets: str, shape: type[Answer]) -> Answer: ...


def _decode(
    body: bytes, request_id: str | None, *secrets: str, shape: type[Any] = TaskListResponse
) -> Any:
    """The answer in ``body`` (a task list unless ``shape`` says otherwise), or its error.

    The error is an :class:`ApiError`, wrapped in a :class:`_RetryableError` when the
    RetCode says that trying again may help.
    """
    try:
        answer = decode_answer(body, shape)
    except InvalidResponseError as error:
        raise _invalid(error, request_id, *secrets) from None
    code = answer.ret_code
    if code == 0:
        return answer
    # The message is the gateway's text and is logged at warning: printable, short, scrubbed.
    message = scrub(answer.message or "", *secrets)[:_MESSAGE_LIMIT]
    reason: Outcome = "rate_limited" if code == _RET_RATE_LIMITED else "api_error"
    failure = ApiError(reason, f"RetCode {code}: {message}"[:_DETAIL_LIMIT], request_id)
    if code in _RETRY_RET_CODES:
        raise _RetryableError(failure, None)
    raise failure


def _invalid(error: InvalidResponseError, request_id: str | None, *secrets: str) -> ApiError:
    return ApiError("invalid_response", scrub(str(error), *secrets)[:_DETAIL_LIMIT], request_id)


def _unchanged(answer: _Result) -> _Result:
    return answer


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


def _request_id(value: str | None, *secrets: str) -> str | None:
    """The gateway's request id if it is a plain id, scrubbed as gateway text is (a gateway
    may set it to a signature, or the private key); anything else is dropped."""
    if value is None:
        return None
    value = value.strip(" \t")
    return scrub(value, *secrets) if _REQUEST_ID.fullmatch(value) else None
