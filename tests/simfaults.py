"""Misbehaviour on demand for the simulated API, and the simulator with it plugged in.

Tests import :class:`SimulatedApi` from here: the package's server, with a
:class:`Faults` of its own (``api.faults.http_error(503, times=1)`` and so on).
"""

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from simanswers import (
    OVERSIZED_HEAD,
    OVERSIZED_TAIL,
    WRONG_TYPES,
    BadJson,
    Drip,
    Drop,
    EchoPlace,
    EchoSignature,
    Hang,
    HtmlPage,
    HttpError,
    Oversized,
    RetCodeAnswer,
    WrongTypes,
    WrongTypesAnswer,
)

from exporter.simulator import server
from exporter.simulator.account import Project
from exporter.simulator.hooks import Fault
from exporter.simulator.protocol import Dataset, Target


@dataclass
class _Rule:
    """A fault and how long it lasts: ``remaining`` requests, or None until cleared."""

    remaining: int | None
    target: Target | None
    from_offset: int

    def applies_to(self, target: Target | None, offset: int) -> bool:
        return (self.target is None or self.target == target) and offset >= self.from_offset

    def consume(self) -> None:
        if self.remaining is not None:
            self.remaining -= 1


@dataclass
class _DelayRule(_Rule):
    seconds: float


@dataclass
class _AnswerRule(_Rule):
    fault: Fault


class Faults:
    """Misbehaviour on demand; thread-safe.

    Each method adds a fault for the next ``times`` requests (None: until
    :meth:`clear`), for every target or only ``target``, and for every page or only
    those from ``from_offset`` on (so that pages past the end can fail while the
    pages before it are answered). Delays add up and come on top
    of anything else; among the other faults, the first added that applies answers the
    request, so ``http_error(503, times=1)`` then ``bad_json(times=1)`` scripts two
    requests in order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._delays: list[_DelayRule] = []
        self._answers: list[_AnswerRule] = []

    def delay(
        self,
        seconds: float,
        *,
        times: int | None = None,
        target: Target | None = None,
        from_offset: int = 0,
    ) -> None:
        """Wait ``seconds`` before answering (interrupted by the server's stop)."""
        with self._lock:
            self._delays.append(_DelayRule(_checked_times(times), target, from_offset, seconds))

    def http_error(
        self,
        status: int,
        *,
        retry_after: str | None = None,
        body: str | None = None,
        headers: Mapping[str, str] | None = None,
        times: int | None = None,
        target: Target | None = None,
        from_offset: int = 0,
    ) -> None:
        """Answer with HTTP ``status`` and an HTML body (an nginx-style error page by default).

        ``headers`` are sent too; an ``X-UCLOUD-REQUEST-UUID`` among them replaces the
        random request id.
        """
        fault = HttpError(status, retry_after, body, tuple((headers or {}).items()))
        self._add(fault, times, target, from_offset)

    def bad_json(
        self, *, times: int | None = None, target: Target | None = None, from_offset: int = 0
    ) -> None:
        """Answer 200 ``application/json`` with the real answer cut in half."""
        self._add(BadJson(), times, target, from_offset)

    def html_page(
        self, *, times: int | None = None, target: Target | None = None, from_offset: int = 0
    ) -> None:
        """Answer 200 ``text/html`` with a login page, as a captive proxy would."""
        self._add(HtmlPage(), times, target, from_offset)

    def ret_code(
        self,
        code: int,
        message: str,
        *,
        times: int | None = None,
        target: Target | None = None,
        from_offset: int = 0,
    ) -> None:
        """Answer 200 with an API error: RetCode ``code`` and ``message``."""
        self._add(RetCodeAnswer(code, message), times, target, from_offset)

    def wrong_types(
        self,
        variant: WrongTypes = "progress_string",
        *,
        times: int | None = None,
        target: Target | None = None,
        from_offset: int = 0,
    ) -> None:
        """Answer 200 with the real answer's types broken: see :data:`WrongTypes`."""
        if variant not in WRONG_TYPES:
            raise ValueError(f"unknown wrong_types variant {variant!r}")
        self._add(WrongTypesAnswer(variant), times, target, from_offset)

    def reset(
        self, *, times: int | None = None, target: Target | None = None, from_offset: int = 0
    ) -> None:
        """Read the request, then close the connection with a TCP RST."""
        self._add(Drop(reset=True), times, target, from_offset)

    def close_without_answer(
        self, *, times: int | None = None, target: Target | None = None, from_offset: int = 0
    ) -> None:
        """Read the request, then close the connection cleanly without answering."""
        self._add(Drop(reset=False), times, target, from_offset)

    def drip(
        self,
        bytes_per_second: float,
        *,
        times: int | None = None,
        target: Target | None = None,
        from_offset: int = 0,
    ) -> None:
        """Send the headers (full Content-Length), then the body a byte at a time."""
        if bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be positive")
        self._add(Drip(bytes_per_second), times, target, from_offset)

    def hang(
        self, *, times: int | None = None, target: Target | None = None, from_offset: int = 0
    ) -> None:
        """Read the request and never answer, until the server stops."""
        self._add(Hang(), times, target, from_offset)

    def oversized(
        self,
        n_bytes: int,
        *,
        content_length: bool = True,
        times: int | None = None,
        target: Target | None = None,
        from_offset: int = 0,
    ) -> None:
        """Stream a valid JSON answer of exactly ``n_bytes``, in bounded memory.

        Without ``content_length`` the body ends when the connection closes, so a client
        cannot reject it by its header alone.
        """
        minimum = len(OVERSIZED_HEAD) + len(OVERSIZED_TAIL)
        if n_bytes < minimum:
            raise ValueError(f"n_bytes must be at least {minimum}")
        self._add(Oversized(n_bytes, content_length), times, target, from_offset)

    def echo_signature(
        self,
        place: EchoPlace,
        *,
        upper: bool = False,
        times: int | None = None,
        target: Target | None = None,
        from_offset: int = 0,
    ) -> None:
        """Quote the request's signature and the one received before it back to the client.

        ``message``: a RetCode 171 answer with them in its Message; ``header``: the real
        answer with them in a header; ``malformed_header``: the real answer with them in
        a header line without a colon, which ends the headers (urllib3, which the client
        used before, quoted it at warning).
        ``upper`` sends them upper-cased.
        """
        self._add(EchoSignature(place, upper), times, target, from_offset)

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._delays.clear()
            self._answers.clear()

    def take(self, target: Target | None, offset: int = 0) -> tuple[float, Fault | None]:
        """Consume what applies to one request: the total delay and the fault that answers it."""
        with self._lock:
            delays = [rule for rule in self._delays if rule.applies_to(target, offset)]
            answer = next((rule for rule in self._answers if rule.applies_to(target, offset)), None)
            for rule in [*delays, *([answer] if answer else [])]:
                rule.consume()
            self._delays = [rule for rule in self._delays if rule.remaining != 0]
            self._answers = [rule for rule in self._answers if rule.remaining != 0]
        return sum(rule.seconds for rule in delays), answer.fault if answer else None

    def _add(
        self, fault: Fault, times: int | None, target: Target | None, from_offset: int
    ) -> None:
        with self._lock:
            self._answers.append(_AnswerRule(_checked_times(times), target, from_offset, fault))


def _checked_times(times: int | None) -> int | None:
    if times is not None and times < 1:
        raise ValueError("times must be at least 1, or None for until cleared")
    return times


class SimulatedApi(server.SimulatedApi):
    """The simulated API with a :class:`Faults` plugged in unless one is given."""

    faults: Faults

    def __init__(
        self,
        public_key: str,
        private_key: str,
        dataset: Dataset,
        *,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
        projects: Iterable[Project] | None = None,
        rate_limit: int | None = None,
    ) -> None:
        faults = faults if faults is not None else Faults()
        super().__init__(
            public_key,
            private_key,
            dataset,
            faults=faults,
            clock=clock,
            host=host,
            port=port,
            projects=projects,
            rate_limit=rate_limit,
        )
