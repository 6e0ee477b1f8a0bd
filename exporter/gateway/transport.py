"""One signed API call: the HTTP exchange, bounded reads, retries and backoff, the rate limit.

Requests are POST form bodies, as the official SDKs send them, so that the signed
parameters never appear in a URL, a proxy's access log or an exception message. Every
attempt is counted by action and outcome; every answer is decoded into the shape its
action returns, and a ``RetCode`` other than 0 becomes an :class:`ApiError`.
"""

import http.client
import logging
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Final, TypeVar, overload
from urllib.parse import urlencode

from pydantic import SecretStr

from exporter.gateway.answers import Answer, InvalidResponseError, TaskListResponse, decode_answer
from exporter.gateway.budgets import CollectionDeadline, RateLimit
from exporter.gateway.deadline import Deadline
from exporter.gateway.outcomes import ApiError, Outcome, RequestStats
from exporter.gateway.redaction import SIGNATURES, describe, scrub
from exporter.gateway.session import GatewayConnection, GatewayConnections
from exporter.gateway.signature import ParamValue, signed_form
from exporter.gateway.watchdog import RequestGuard, Watchdog
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

    Retries are ours, bounded by the deadline. The connections
    (:mod:`exporter.gateway.session`) hand their sockets to the watchdog, which ends a
    request at its deadline whatever part of the exchange it is in; nothing is taken
    from the environment (no proxy, no CA bundle: whom we trust is a setting).
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
        self._connections = GatewayConnections(
            api_url, ca_bundle=options.ca_bundle, max_idle=options.parallel_pages * 4
        )
        self._watchdog = Watchdog()
        # No Accept-Encoding: http.client asks for identity, so that the size cap counts
        # the bytes we decode and no decompression runs unbounded on a gateway's say-so.
        self._headers = {
            "User-Agent": f"ucdn-prefetch-exporter/{__version__}",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        self._rate_limit = RateLimit(options.max_requests_per_second)

    def close(self) -> None:
        """End every request under way at once and release the connections.

        Requests started afterwards end at once too, as timeouts.
        """
        self._watchdog.close()
        self._connections.close()

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
                self._stats.record(action, retryable.error.reason)
                wait = self._backoff(attempt, retryable.retry_after)
                if attempt >= self._options.max_retries or wait >= deadline.remaining():
                    raise retryable.error from None
                self._sleep(wait)
                attempt += 1
            except ApiError as error:
                self._stats.record(action, error.reason)
                raise
            else:
                self._stats.record(action, "ok")
                return answer

    def _wait_for_slot(self, deadline: Deadline) -> None:
        wait = self._rate_limit.reserve(deadline)
        if wait > 0:
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
        remaining = deadline.remaining()
        if remaining <= 0:
            raise ApiError("timeout", "no time left in the scrape's deadline")
        # The watchdog ends the exchange at the deadline; the socket timeout still bounds
        # each connect and read, as the request timeout promises.
        with self._watchdog.guard(remaining) as guard:
            try:
                body, request_id = self._exchange(
                    form, deadline, min(self._options.request_timeout, remaining), guard
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
        secret = self._private_key.get_secret_value()
        answer = _decode(body, request_id, secret, shape=shape)
        try:
            return then(answer)
        except InvalidResponseError as error:
            raise _invalid(error, request_id, secret) from None

    def _exchange(
        self, form: dict[str, str], deadline: Deadline, timeout: float, guard: RequestGuard
    ) -> tuple[bytes, str | None]:
        """Send one request; its answer's body and request id. ``guard`` bounds it.

        The connection goes back to the pool only when its answer was read to the end
        and the watchdog did not end it; on any failure it is closed.
        """
        connection = self._connections.checkout(timeout)
        try:
            answer = self._send(connection, form, timeout)
            if answer.msg.defects:
                _log_defects(answer)
            request_id = _request_id(_header(answer, _REQUEST_ID_HEADER))
            status = answer.status
            if status in _RETRY_STATUSES:
                retry_after = _retry_after(_header(answer, "Retry-After"))
                http_error = ApiError("http_error", f"HTTP {status}", request_id)
                raise _RetryableError(http_error, retry_after)
            if status != 200:
                raise ApiError("http_error", f"HTTP {status}", request_id)
            try:
                body = self._read_body(answer, connection, deadline)
            except (ApiError, _RetryableError) as error:
                # A body cut short or too large: support wants the request id.
                (error if isinstance(error, ApiError) else error.error).request_id = request_id
                raise
        except BaseException:
            connection.close()
            raise
        if answer.will_close or guard.fired:
            connection.close()
        else:
            self._connections.give_back(connection)
        return body, request_id

    def _send(
        self, connection: GatewayConnection, form: dict[str, str], timeout: float
    ) -> http.client.HTTPResponse:
        """POST the form; the answer with its status line and headers read."""
        try:
            connection.request(
                "POST", self._connections.path, urlencode(form).encode(), self._headers
            )
            return connection.getresponse()
        except TimeoutError:
            raise ApiError("timeout", f"no answer within {timeout:.1f}s") from None
        except (OSError, http.client.HTTPException) as error:
            # Refused, reset, closed, DNS, TLS; a status line or headers that are not HTTP.
            raise _RetryableError(ApiError("connection_error", describe(error)), None) from None

    def _read_body(
        self, answer: http.client.HTTPResponse, connection: GatewayConnection, deadline: Deadline
    ) -> bytes:
        """Read the whole body, but never past the size caps.

        The deadline is the watchdog's to enforce; the socket timeout bounds each read.
        Every byte counts against the answer's cap and the collection's budget. A reset
        or close mid-body is a connection error worth retrying, as at connect time.
        """
        limit = self._options.max_response_bytes
        declared = _header(answer, "Content-Length") or ""
        if declared.isdigit() and int(declared) > limit:
            raise ApiError("invalid_response", f"answer of {declared} bytes exceeds {limit}")
        budget = deadline.budget if isinstance(deadline, CollectionDeadline) else None
        if connection.sock is not None:  # the headers were read with the time left at the start
            connection.sock.settimeout(self._options.request_timeout)
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                chunk = answer.read(_READ_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise ApiError("invalid_response", f"answer exceeds {limit} bytes")
                if budget is not None:
                    budget.spend(len(chunk))
                chunks.append(chunk)
        except TimeoutError:
            raise ApiError("timeout", f"no data for {self._options.request_timeout:.1f}s") from None
        except (OSError, http.client.HTTPException) as error:
            failure = ApiError("connection_error", describe(error))
            raise _RetryableError(failure, None) from None
        except ApiError:
            raise  # a size cap's, as it is
        except Exception as error:  # anything else http.client meets in a body is the body's
            raise ApiError("invalid_response", describe(error)) from None
        if answer.length:  # http.client ends a Content-Length body cut short quietly
            missing = f"answer cut short, {answer.length} bytes missing"
            raise _RetryableError(ApiError("connection_error", missing), None)
        return b"".join(chunks)


def _ended(deadline: Deadline) -> ApiError:
    """The error of a request that the watchdog ended: its deadline, or the client's close."""
    if deadline.expired:
        return ApiError("timeout", "exchange not finished within the deadline, connection closed")
    return ApiError("timeout", "request ended: the client is closing")


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


def _log_defects(answer: http.client.HTTPResponse) -> None:
    # A line that is not a header ends the headers: it and those after it are ignored.
    # Their text is the gateway's (it may echo a signature): only the kinds are named.
    kinds = ",".join(sorted({type(defect).__name__ for defect in answer.msg.defects}))
    log.debug("answer headers not parsed whole", extra={"fields": {"defects": kinds}})


def _header(answer: http.client.HTTPResponse, name: str) -> str | None:
    """A header's value, its repetitions joined by commas as a single field's would be."""
    values = answer.headers.get_all(name)
    return None if values is None else ", ".join(values)


def _request_id(value: str | None) -> str | None:
    """The gateway's request id if it is a plain id; anything else is gateway text, dropped."""
    if value is None:
        return None
    value = value.strip(" \t")
    return value if _REQUEST_ID.fullmatch(value) else None
