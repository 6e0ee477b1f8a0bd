"""A cut exchange is reset, so that the gateway learns of it at once, whatever its window.

On real loopback sockets: the gateway end floods, the client end stops reading (as a
client busy parsing a flood does), so that the gateway's sends wait on a zero window and
TCP's persist timer backs its probes off to seconds apart. A FIN would reach the gateway only
at its next probe; the watchdog's cut must reach it at the client's close.
"""

import socket
import threading
import time

import pytest

from exporter.gateway.watchdog import Watchdog

pytestmark = pytest.mark.e2e  # three seconds of a stalled window

STALLED = 3.0  # seconds of zero window: the persist timer's probes are seconds apart by then
MARGIN = 1.0


def test_a_cut_connection_reaches_a_gateway_that_waits_on_a_full_window() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    gateway_end, _ = listener.accept()
    refused_at: list[float] = []

    def flood() -> None:
        try:
            while True:
                gateway_end.sendall(b"x" * 65536)
        except OSError:
            refused_at.append(time.monotonic())

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    watchdog = Watchdog()
    cut_at = time.monotonic() + STALLED
    try:
        with watchdog.guard(lambda: cut_at - time.monotonic()) as guard:
            guard.attach(client)
            while not guard.fired:
                time.sleep(0.05)
        # What the request's thread does once its read returns: read to the end, close.
        while client.recv(1 << 20):
            pass
        client.close()
        closed_at = time.monotonic()
        flooder.join(MARGIN + 4.0)
        assert refused_at, "the gateway still writes: it never saw the connection end"
        assert refused_at[0] - closed_at <= MARGIN, f"seen {refused_at[0] - closed_at:.2f}s late"
    finally:
        watchdog.close()
        client.close()
        gateway_end.close()
        listener.close()
