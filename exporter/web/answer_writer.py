"""Writing an answer to a client within a time of its own, however slowly the client reads.

A socket timeout bounds one wait for the client to take bytes, not the whole answer: a
client that reads a little every few seconds would keep a worker writing for ever. Here
each answer has ``write_timeout`` seconds from its first byte; past that the write fails
as a socket timeout does, and the server closes the connection.
"""

import contextlib
import logging
import math
import socket
import time
from typing import TYPE_CHECKING

from cheroot.makefile import StreamWriter

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

_log = logging.getLogger(__name__)


class _DeadlineSocketWrites(socket.SocketIO):
    """Socket writes that each wait no longer than the answer's time left."""

    def __init__(self, sock: socket.socket, write_timeout: float) -> None:
        super().__init__(sock, "wb")
        self._socket = sock
        self._write_timeout = write_timeout
        self.deadline = math.inf

    def write(self, b: "ReadableBuffer") -> int | None:
        """Send what the client takes of ``b`` before the answer's deadline."""
        if self.deadline == math.inf:
            self.deadline = time.monotonic() + self._write_timeout
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            _log.debug("closing a connection: answer not taken in %s s", self._write_timeout)
            # The message cheroot reads as a timeout: it closes quietly, without a 500.
            raise TimeoutError("timed out")
        waits = self._socket.gettimeout()
        if waits is None or remaining < waits:
            self._socket.settimeout(remaining)
        try:
            return super().write(b)
        except TimeoutError:
            # A TLS socket says "The write operation timed out", which cheroot logs as a
            # fault of ours with a traceback: a slow client's doing is no warning.
            raise TimeoutError("timed out") from None


class AnswerWriter(StreamWriter):
    """cheroot's buffered socket writer over ``_DeadlineSocketWrites``."""

    def __init__(self, sock: socket.socket, bufsize: int, write_timeout: float) -> None:
        # StreamWriter.__init__ would build a plain SocketIO; its base takes any raw stream.
        self.sink = _DeadlineSocketWrites(sock, write_timeout)
        super(StreamWriter, self).__init__(self.sink, bufsize)
        self.bytes_written = 0

    def close(self) -> None:
        """Close, dropping what the client did not take in time.

        The garbage collector closes a writer that cheroot let go of after its answer timed
        out, and closing flushes: that flush would time out again, and Python 3.13 prints
        such an error to stderr as unraisable, a traceback among the log lines.
        """
        # The answer's time is up, or the client has gone: nothing more can be sent.
        with contextlib.suppress(OSError):
            super().close()

    def start_answer(self) -> None:
        """Give the next answer its own time, counted from its first byte."""
        self.sink.deadline = math.inf
