"""The hooks through which misbehaviour is plugged into the server.

The server asks its :class:`Faults` hook, for every request, how long to wait and which
:class:`Fault` (if any) answers instead of the real answer; a fault drives the
:class:`Exchange`. The tests plug their whole catalogue in (``tests/simfaults.py``); the
simulator's own command line needs only :class:`FixedDelay`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from exporter.simulator.protocol import Target


class Exchange(Protocol):
    """What a fault may do with the request it answers."""

    def api_payload(self) -> dict[str, Any]:
        """The answer the server would have given without the fault (a private copy)."""
        ...

    def signatures(self) -> list[str]:
        """The signatures received so far, oldest first, this request's last (if it had one)."""
        ...

    def send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
        raw_header_lines: Sequence[str] = (),
    ) -> None:
        """Send a complete response; ``raw_header_lines`` go after the headers, as they are."""
        ...

    def send_head(self, status: int, content_type: str, content_length: int | None) -> None:
        """Send the status line and headers; None means the body ends when the connection does."""
        ...

    def write(self, data: bytes) -> bool:
        """Send part of a body; False once the client is gone."""
        ...

    def drop(self, *, reset: bool) -> None:
        """Close the connection without (more of) an answer; ``reset`` sends a TCP RST."""
        ...

    def pause(self, seconds: float | None) -> bool:
        """Wait, or until the server stops (None: only that); True when it stopped."""
        ...


class Fault(Protocol):
    """One misbehaviour: it answers a request in place of the real answer."""

    def answer(self, exchange: Exchange) -> None:
        """Answer (or refuse to answer) the request through ``exchange``."""
        ...


class Faults(Protocol):
    """What the server asks, for every request, before it answers."""

    def take(self, target: Target | None, offset: int = 0) -> tuple[float, Fault | None]:
        """Consume what applies to one request: seconds to wait, and the fault that answers."""
        ...


@dataclass(frozen=True)
class FixedDelay:
    """Every request waits ``seconds``, then gets the real answer: a slow but sound gateway."""

    seconds: float = 0.0

    def take(self, target: Target | None, offset: int = 0) -> tuple[float, Fault | None]:
        """The same delay for every request, and never a fault."""
        return self.seconds, None
