"""An answer's writer that timed out goes quietly, however it is closed.

On a real socket pair whose far end never reads: the answer's write times out, and the
writer is then dropped with the rest of the answer still buffered, as cheroot drops a
connection it closed. Its close, from the garbage collector, must raise nothing: Python 3.13
reports such an error on stderr, a traceback among the exporter's log lines.
"""

import gc
import socket
import sys
from typing import Any

import pytest

from exporter.web.answer_writer import AnswerWriter

WRITE_TIMEOUT = 0.3


def test_a_writer_dropped_after_its_answer_timed_out_raises_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    ours, client = socket.socketpair()
    try:
        ours.settimeout(5.0)
        writer = AnswerWriter(ours, 65536, WRITE_TIMEOUT)
        with pytest.raises(TimeoutError):
            # Far more than the socket buffers hold; cheroot's writer has no annotations.
            writer.write(b"x" * 8_000_000)  # type: ignore[no-untyped-call]
            writer.flush()
        del writer
        gc.collect()
    finally:
        ours.close()
        client.close()
    assert [repr(report.exc_value) for report in unraisable] == []
