"""The private key and the signatures never appear in any output, whatever goes wrong.

A canary private key goes through every upstream fault with DEBUG logs, in logfmt and
in JSON; the canary and every signature the simulator received must then be absent
from stdout, stderr and every /metrics body. Bad settings next to the canary (in the
environment and as a flag) must exit 2 with one line that names the setting and not
the key. The log filter itself is checked on fields and tracebacks.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator

import pytest
from faultkit import (
    CANARY,
    PUBLIC_KEY,
    Exporter,
    assert_no_secret,
    closed_port_url,
    exporter_args,
    signatures,
    simulator,
)

from exporter.logs import JsonFormatter, LogfmtFormatter, RedactSecrets
from exporter.simulator import SimulatedApi

FAULTS: list[tuple[str, Callable[[SimulatedApi], None]]] = [
    ("healthy", lambda api: None),
    ("slow", lambda api: api.faults.delay(5)),
    ("drip", lambda api: api.faults.drip(1)),
    ("hang", lambda api: api.faults.hang()),
    ("503-retry-after", lambda api: api.faults.http_error(503, retry_after="3600")),
    # An error page that echoes the key, as a misconfigured proxy might.
    ("500-echo", lambda api: api.faults.http_error(500, body=f"<pre>key={CANARY}</pre>")),
    ("reset", lambda api: api.faults.reset()),
    ("closed", lambda api: api.faults.close_without_answer()),
    ("bad-json", lambda api: api.faults.bad_json()),
    ("html", lambda api: api.faults.html_page()),
    # A gateway error message that quotes the key back.
    ("retcode-echo", lambda api: api.faults.ret_code(171, f"bad signature for key {CANARY}")),
    ("wrong-types", lambda api: api.faults.wrong_types("null_fields")),
    ("huge", lambda api: api.faults.wrong_types("huge_numbers")),
    ("oversized", lambda api: api.faults.oversized(1 << 20, content_length=False)),
]


@pytest.fixture
def api() -> Iterator[SimulatedApi]:
    upstream = simulator()
    yield upstream
    upstream.stop()


def settle(exporter: Exporter, api: SimulatedApi) -> None:
    """Wait (bounded) until a timed-out request is over, so the next fault gets its own fetch."""
    give_up = time.monotonic() + 3.0
    while time.monotonic() < give_up:
        before = api.request_count()
        time.sleep(0.3)
        if api.request_count() == before:
            return


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_a_canary_key_never_leaks_through_any_fault(api: SimulatedApi, log_format: str) -> None:
    exporter = Exporter(
        exporter_args(api.url, "--log-format", log_format, "--max-response-bytes", "65536")
    ).wait_started()
    refused = Exporter(exporter_args(closed_port_url(), "--log-format", log_format))
    try:
        for _name, inject in FAULTS:
            api.faults.clear()
            inject(api)
            assert exporter.scrape(1.5).status == 200
            settle(exporter, api)
        api.faults.clear()
        exporter.scrape(2, path="probe?project_id=default&platform=cdn")
        refused.wait_started().scrape(2)
    finally:
        exporter.stop()
        refused.stop()
    # The run did exercise the faults, at DEBUG: otherwise absence would prove nothing.
    reasons = {record.get("reason") for record in exporter.failures()}
    assert {"timeout", "http_error", "connection_error", "invalid_response", "api_error"} <= reasons
    assert any(record.get("level") == "debug" for record in exporter.log_records())
    received = signatures(api)
    # Retries resend the same signed form, and a second's requests may sign alike.
    assert len(api.requests) >= len(FAULTS) and len(received) >= 2
    for where, text in [*exporter.all_output(), *refused.all_output()]:
        assert_no_secret(where, text, {CANARY, *received})
    # The echoed key was replaced, not dropped with the rest of the line.
    assert "<redacted>" in exporter.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"UCDN_EXPORTER_PRIVATE_KEY": CANARY, "UCDN_EXPORTER_PAGE_SIZE": "zero"},
        {"UCLOUD_PRIVATE_KEY": CANARY, "UCDN_EXPORTER_LOOKBACK_SECONDS": "-1"},
        {"UCDN_EXPORTER_PRIVATE_KEY": CANARY, "UCDN_EXPORTER_LOG_LEVEL": CANARY},
    ],
    ids=["page-size", "lookback-via-ucloud-key", "key-as-another-value"],
)
def test_a_bad_setting_next_to_a_canary_key_exits_2_without_it(env: dict[str, str]) -> None:
    bad = next(name for name in env if "PRIVATE_KEY" not in name)
    env = {
        **env,
        "UCDN_EXPORTER_PUBLIC_KEY": PUBLIC_KEY,
        "UCDN_EXPORTER_API_URL": "http://127.0.0.1:9/",
    }
    exporter = Exporter([], env=env)
    assert exporter.wait_exit() == 2
    lines = exporter.stderr.strip().splitlines()
    assert len(lines) == 1, exporter.stderr
    assert bad in lines[0], "the line names the setting"
    assert "Traceback" not in exporter.stderr
    assert_no_secret("stderr", exporter.stderr + exporter.stdout, {CANARY})


def test_a_bad_flag_next_to_a_canary_key_flag_exits_2_without_it() -> None:
    exporter = Exporter(
        ["--public-key", PUBLIC_KEY, "--private-key", CANARY, "--max-retries", "99"]
    )
    assert exporter.wait_exit() == 2
    assert "UCDN_EXPORTER_MAX_RETRIES" in exporter.stderr
    assert "--max-retries" in exporter.stderr
    assert_no_secret("stderr", exporter.stderr + exporter.stdout, {CANARY})


def test_check_config_prints_no_secret(api: SimulatedApi) -> None:
    api.faults.ret_code(171, f"Signature VerifyAC Error for {CANARY}")
    exporter = Exporter(exporter_args(api.url, "--check-config"))
    assert exporter.wait_exit() == 1
    assert "api_error" in exporter.stdout
    assert_no_secret(
        "check-config output", exporter.stdout + exporter.stderr, {CANARY, *signatures(api)}
    )


def log_line(formatter: logging.Formatter, emit: Callable[[logging.Logger], None]) -> str:
    """What one logger call prints through the exporter's handler set-up."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactSecrets([CANARY]))
    logger = logging.getLogger(f"test_secrets.{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def _raise_with_the_key() -> None:
    raise ValueError(f"a library put {CANARY} in its message")


def _log_exception(logger: logging.Logger) -> None:
    try:
        _raise_with_the_key()
    except ValueError:
        logger.exception("failed", extra={"fields": {"detail": f"key={CANARY}", "n": 3}})


@pytest.mark.parametrize("formatter", [LogfmtFormatter(), JsonFormatter()], ids=["logfmt", "json"])
@pytest.mark.parametrize(
    "emit",
    [
        pytest.param(lambda log: log.warning("key %s", CANARY), id="message-args"),
        pytest.param(
            lambda log: log.warning("failed", extra={"fields": {"detail": CANARY}}), id="fields"
        ),
        pytest.param(_log_exception, id="traceback-and-fields"),
    ],
)
def test_the_log_filter_redacts_messages_fields_and_tracebacks(
    formatter: logging.Formatter, emit: Callable[[logging.Logger], None]
) -> None:
    line = log_line(formatter, emit)
    assert line.strip(), "something was logged"
    assert CANARY not in line
    assert "<redacted>" in line
