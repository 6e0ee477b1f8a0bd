"""Reading a request head that the web server's selector loop has already partly received.

The loop reads what a client sends without blocking, into :class:`_ReceivedFirst`'s
buffer; once :meth:`HeadReader.head_complete` says the head is in, a worker's cheroot
reads the request from that buffer first, then from the socket.
"""

import socket
from typing import Any, Final

from cheroot.makefile import StreamReader

MAX_HEADER_BYTES: Final = 64 * 1024


class _ReceivedFirst(socket.SocketIO):
    """Socket reads that first return the bytes the selector loop has already received."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, "rb")
        self.received = bytearray()

    def readinto(self, buffer: Any) -> int | None:
        """Fill ``buffer`` from the received bytes, or from the socket once they are used."""
        if not self.received:
            return super().readinto(buffer)
        view = memoryview(buffer).cast("B")
        count = min(len(view), len(self.received))
        view[:count] = self.received[:count]
        del self.received[:count]
        return count


class HeadReader(StreamReader):
    """cheroot's buffered socket reader over ``_ReceivedFirst``."""

    def __init__(self, sock: socket.socket, bufsize: int) -> None:
        # StreamReader.__init__ would build a plain SocketIO; its base takes any raw stream.
        self.source = _ReceivedFirst(sock)
        super(StreamReader, self).__init__(self.source, bufsize)
        self.bytes_read = 0
        # How much of source.received has been searched for the end of the head: a client
        # sending its head in one-byte segments must not make each search start over.
        self._searched = 0

    def start_head(self) -> None:
        """Begin looking for the end of a new request head."""
        self._searched = 0

    def head_complete(self) -> bool:
        """Whether the bytes at hand hold a whole request head (or more than is allowed).

        Any complete head will do, even a malformed one: then cheroot answers 400 from
        the bytes at hand, without waiting for more.
        """
        received = self.source.received
        if self.has_data():  # type: ignore[no-untyped-call]
            # Left over from a pipelined request: rare, so searched whole.
            at_hand = self.peek(0) + received
            return len(at_hand) > MAX_HEADER_BYTES or b"\r\n\r\n" in at_hand
        end = received.find(b"\r\n\r\n", max(0, self._searched - 3))
        self._searched = len(received)
        # Past the limit, cheroot answers 413 or 414 without waiting for more.
        return end >= 0 or len(received) > MAX_HEADER_BYTES
