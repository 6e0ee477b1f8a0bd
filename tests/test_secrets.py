"""The private key and the signatures never appear in any output, whatever goes wrong.

A canary private key goes through every upstream fault with DEBUG logs, in logfmt and
in JSON; the canary and every signature the simulator received must then be absent
from stdout, stderr and every /metrics body. Bad settings next to the canary (in the
environment and as a flag) must exit 2 with one line that names the setting and not
the key. The log filter itself is checked on fields and tracebacks.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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
from hostile import Behaviour, HostileGateway, Peer
from simfaults import SimulatedApi

from exporter.gateway.answers import PREFETCH_ACTION, REFRESH_ACTION
from exporter.gateway.redaction import SignatureMemory
from exporter.gateway.signature import sign
from exporter.logs import JsonFormatter, LogfmtFormatter, RedactSecrets, configure_logging

pytestmark = pytest.mark.e2e

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


# Files that hold the canary key and are wrong in some way: each stops start-up with one
# line that names the file, never a byte of it.
BROKEN_KEY_FILES = {
    "credential-not-json": (
        "credential.json",
        f'[{{"profile": "default", "private_key": "{CANARY}',
    ),
    "credential-an-object": ("credential.json", json.dumps({"private_key": CANARY})),
    "credential-key-a-number": (
        "credential.json",
        json.dumps([{"profile": "default", "public_key": 1, "private_key": CANARY}]),
    ),
    "accounts-not-yaml": ("accounts.yaml", f"- {{name: a, private_key: {CANARY}"),
    "accounts-unknown-key": ("accounts.yaml", f"- {{name: a, {CANARY}: {CANARY}}}"),
    "accounts-key-a-list": (
        "accounts.yaml",
        f"- {{name: a, public_key: p, private_key: [{CANARY}]}}",
    ),
    "accounts-url": (
        "accounts.yaml",
        f"- {{name: a, public_key: p, private_key: k, api_url: {CANARY}}}",
    ),
}


@pytest.mark.parametrize(
    ("name", "content"), BROKEN_KEY_FILES.values(), ids=BROKEN_KEY_FILES.keys()
)
def test_a_broken_file_holding_the_canary_key_exits_2_without_it(
    tmp_path: Path, name: str, content: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    path.chmod(0o600)
    env = {
        "UCLOUD_SHARED_CREDENTIAL_FILE": str(tmp_path / "credential.json"),
        "HOME": str(tmp_path),
    }
    if name == "accounts.yaml":
        env["UCDN_EXPORTER_ACCOUNTS_FILE"] = str(path)
    exporter = Exporter([], env=env)
    assert exporter.wait_exit() == 2
    lines = exporter.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], exporter.stderr
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


# --- a gateway that echoes the signatures it received


def assert_no_signature_in_any_case(where: str, text: str, secrets: set[str]) -> None:
    """Like :func:`assert_no_secret`, but a secret counts in any case, as a gateway may spell it."""
    lowered = text.lower()
    for secret in secrets:
        assert secret.lower() not in lowered, f"a secret ({secret[:6]}...) leaked into {where}"


ECHOES: list[tuple[str, Callable[[SimulatedApi], None]]] = [
    # A header line without a colon: the headers end there, and urllib3 quotes it in a line
    # of its own, which is demoted to debug and redacted as every record is.
    ("malformed-header", lambda api: api.faults.echo_signature("malformed_header")),
    (
        "malformed-header-upper",
        lambda api: api.faults.echo_signature("malformed_header", upper=True),
    ),
    ("header", lambda api: api.faults.echo_signature("header", upper=True)),
    ("message", lambda api: api.faults.echo_signature("message")),
    # From the second page on, so the first page's signature is quoted by a later answer.
    (
        "message-upper-page-2",
        lambda api: api.faults.echo_signature("message", upper=True, from_offset=5),
    ),
]


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_no_echoed_signature_reaches_any_output_in_any_case(log_format: str) -> None:
    api = simulator()  # 12 tasks: pages of 5 make three requests a collection
    exporter = Exporter(
        exporter_args(api.url, "--log-format", log_format, "--page-size", "5", "--max-retries", "0")
    ).wait_started()
    try:
        for _name, inject in ECHOES:
            api.faults.clear()
            inject(api)
            assert exporter.scrape(3).status == 200
    finally:
        exporter.stop()
        api.stop()
    records = exporter.log_records()
    # The faults were exercised: urllib3 quoted the malformed header line, the signatures in
    # it redacted, and the echoing messages failed targets.
    parse_failures = [r for r in records if "Failed to parse headers" in r.get("msg", "")]
    assert parse_failures, exporter.stderr
    assert {r["level"] for r in parse_failures} == {"debug"}
    for record in parse_failures:
        assert "MissingHeaderBodySeparatorDefect" in record["msg"]
        assert "Signature <redacted>" in record["msg"]
    assert len(exporter.failures()) >= 2
    # A gateway cannot raise a library's line to warning: every one is debug.
    library = [r for r in records if "logger" in r and not r["logger"].startswith("exporter")]
    assert library and {r["level"] for r in library} == {"debug"}
    received = signatures(api)
    # Three pages a collection; collections within one second sign alike.
    assert len(received) >= 3
    for where, text in exporter.all_output():
        assert_no_signature_in_any_case(where, text, {CANARY, *received})
    assert "<redacted>" in exporter.stderr


def test_at_info_a_gateway_cannot_write_a_line_into_the_log() -> None:
    api = simulator()
    api.faults.echo_signature("malformed_header", upper=True)
    args = [arg if arg != "debug" else "info" for arg in exporter_args(api.url)]
    exporter = Exporter(args).wait_started()
    try:
        scrape = exporter.scrape(3)
    finally:
        exporter.stop()
        api.stop()
    assert scrape.up() == 1.0
    assert api.request_count() >= 1
    # Only the exporter's own start and stop lines: nothing from urllib3, at any level.
    loggers = {record.get("logger") for record in exporter.log_records()}
    assert loggers <= {"exporter.cli", "exporter.web.server"}, exporter.stderr
    assert "Failed to parse" not in exporter.stderr


def test_check_config_prints_no_echoed_signature_in_any_case() -> None:
    api = simulator()
    api.faults.echo_signature("message", upper=True)
    try:
        exporter = Exporter(exporter_args(api.url, "--check-config"))
        assert exporter.wait_exit() == 1
    finally:
        api.stop()
    assert "api_error" in exporter.stdout
    assert "<redacted>" in exporter.stdout
    assert_no_signature_in_any_case(
        "check-config output", exporter.stdout + exporter.stderr, {CANARY, *signatures(api)}
    )


def test_gateway_text_is_scrubbed_of_every_signature_made_in_any_case() -> None:
    memory = SignatureMemory(capacity=3)
    made = [sign({"n": n}, CANARY) for n in range(4)]
    for signature in made:
        memory.remember(signature.upper())
    assert made[0] not in memory, "the oldest is forgotten: the memory is bounded"
    text = f"a {made[1].upper()} b x{made[2]}y c {made[3][:39]} d {made[0]}"
    redacted = memory.redact(text)
    assert made[1].upper() not in redacted and made[2] not in redacted
    assert made[3][:39] in redacted, "only a whole signature is one"
    assert made[0] in redacted, "forgotten signatures are the gateway text's scrub's job"


def test_the_log_filter_redacts_the_key_and_signatures_in_any_case() -> None:
    memory = SignatureMemory()
    signature = sign({"Action": "x"}, CANARY)
    memory.remember(signature)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LogfmtFormatter())
    handler.addFilter(RedactSecrets([CANARY], memory))
    logger = logging.getLogger("urllib3.test_secrets")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        logger.warning("unparsed %s and %s", signature.upper(), CANARY.swapcase())
        try:
            raise ValueError(f"data: {signature.upper()}")
        except ValueError:
            logger.debug("failed", exc_info=True)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert text.count("<redacted>") == 3
    assert_no_signature_in_any_case("log", text, {CANARY, signature})


# --- a gateway that echoes secrets in its request id and in a redirect's Location

ECHOED = ["signature", "SIGNATURE", "private-key"]
REDIRECT_ID = "redirect-7"


def echoed(peer: Peer, what: str) -> str:
    """The secret a hostile gateway echoes: this request's signature (lower- or upper-case),
    or the private key, which a real gateway holds to check signatures."""
    signature = peer.form.get("Signature", "")
    return {"signature": signature, "SIGNATURE": signature.upper(), "private-key": CANARY}[what]


def echo_gateway(what: str) -> Behaviour:
    """Per action: prefetch, HTTP 500 with the secret as its request id; refresh, a RetCode
    error with the secret as its request id; the domain list, a 302 whose Location carries
    the signature and the key (in its user-info, path and query) and a plain request id."""

    def behave(peer: Peer) -> None:
        secret = echoed(peer, what)
        action = peer.form.get("Action")
        body = b'{"RetCode": 171, "Message": "Signature VerifyAC Error"}'
        head = ["HTTP/1.1 200 OK", "Content-Type: application/json"]
        request_id = secret
        if action == PREFETCH_ACTION:
            head, body = ["HTTP/1.1 500 Internal Server Error"], b""
        elif action != REFRESH_ACTION:
            signature = peer.form.get("Signature", "")
            location = (
                f"https://u:{CANARY}@elsewhere.example/v2/{signature}/{CANARY}"
                f"?Signature={signature}&Key={CANARY}#{signature}"
            )
            head, body, request_id = (
                ["HTTP/1.1 302 Found", f"Location: {location}"],
                b"",
                REDIRECT_ID,
            )
        head += [f"X-UCLOUD-REQUEST-UUID: {request_id}", f"Content-Length: {len(body)}"]
        peer.send(("\r\n".join([*head, "Connection: close"]) + "\r\n\r\n").encode() + body)

    return behave


def secrets_sent(gateway: HostileGateway) -> set[str]:
    """The private key and every signature the gateway received."""
    received = {c.form["Signature"] for c in gateway.connections if "Signature" in c.form}
    assert received, "no signed request reached the gateway"
    return {CANARY, *received}


@pytest.mark.parametrize("what", ECHOED)
def test_check_config_prints_no_secret_from_a_request_id_or_a_redirect(what: str) -> None:
    with HostileGateway(echo_gateway(what)) as gateway:
        args = exporter_args(gateway.url, "--check-config", "--max-retries", "0", pipeline=True)
        exporter = Exporter(args)
        assert exporter.wait_exit() == 1
        sent = secrets_sent(gateway)
    assert_no_signature_in_any_case("check-config output", exporter.log(), sent)
    # Every echo was read: each row failed with its request id there, redacted.
    assert exporter.stdout.count("; request <redacted>)") == 2, exporter.stdout
    assert "http_error: HTTP 500;" in exporter.stdout
    assert "api_error: RetCode 171: Signature VerifyAC Error;" in exporter.stdout
    # A redirect names its target (what to correct in API_URL), without its secrets.
    redirect = "http_error: HTTP 302, redirects to https://elsewhere.example/v2/<redacted>/"
    assert f"{redirect}<redacted>; request {REDIRECT_ID})" in exporter.stdout


@pytest.mark.parametrize("what", ECHOED)
def test_once_and_serving_print_no_secret_from_a_request_id_or_a_redirect(what: str) -> None:
    with HostileGateway(echo_gateway(what)) as gateway:
        once = Exporter(exporter_args(gateway.url, "--once", "--max-retries", "0", pipeline=True))
        assert once.wait_exit() == 1
        served = Exporter(exporter_args(gateway.url, "--max-retries", "0", pipeline=True))
        try:
            assert served.wait_started().scrape(5).status == 200
            # The quota sweep (the domain list's redirect) runs beside the scrape.
            served.failures(at_least=2)
        finally:
            served.stop()
        sent = secrets_sent(gateway)
    for exporter in (once, served):
        for where, text in exporter.all_output():
            assert_no_signature_in_any_case(where, text, sent)
        records = exporter.log_records()
        ids = {r.get("request_id") for r in records if r.get("msg") == "collection failed"}
        assert ids == {"<redacted>"}, exporter.stderr
        sweeps = [r for r in records if r.get("msg") == "quota sweep failed"]
        assert sweeps and {r.get("request_id") for r in sweeps} == {REDIRECT_ID}, exporter.stderr
        assert "redirects to https://elsewhere.example/v2/" in sweeps[0]["detail"]
    assert "ucdn_prefetch_up" in once.stdout


def test_an_uncaught_exception_is_a_redacted_log_record_in_any_thread(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    memory = SignatureMemory()
    signature = sign({"Action": "x"}, CANARY)
    memory.remember(signature)
    configure_logging("info", "json", [CANARY], memory)

    def crash() -> None:
        raise ValueError(f"a library quoted {signature.upper()} and {CANARY.upper()}")

    thread = threading.Thread(target=crash, name="crashing")
    thread.start()
    thread.join()
    try:
        crash()
    except ValueError:
        sys.excepthook(*sys.exc_info())
    text = capsys.readouterr().err
    records = [json.loads(line) for line in text.splitlines()]
    assert [(r["level"], r["msg"], r.get("thread")) for r in records] == [
        ("error", "uncaught exception", "crashing"),
        ("error", "uncaught exception", None),
    ]
    for record in records:
        assert "ValueError: a library quoted <redacted> and <redacted>" in record["error"]
    assert_no_signature_in_any_case("stderr", text, {CANARY, signature})


def test_a_profile_file_others_can_read_is_one_logged_warning_without_its_key(
    api: SimulatedApi, tmp_path: Path
) -> None:
    """The keys from UCloud's profile files, as the CLI writes them, but readable by anyone:
    the exporter works, and says so once, naming the file and not the key."""
    ucloud = tmp_path / ".ucloud"
    ucloud.mkdir()
    (ucloud / "config.json").write_text(json.dumps([{"profile": "default", "active": True}]))
    credentials = ucloud / "credential.json"
    profile = {"profile": "default", "public_key": PUBLIC_KEY, "private_key": CANARY}
    credentials.write_text(json.dumps([profile]))
    credentials.chmod(0o644)
    args = ["--api-url", api.url, "--check-config", "--log-level", "info"]
    exporter = Exporter(args, env={"HOME": str(tmp_path)})
    assert exporter.wait_exit() == 0, exporter.stdout + exporter.stderr
    warnings = [line for line in exporter.stderr.splitlines() if "readable by others" in line]
    assert len(warnings) == 1, exporter.stderr
    assert str(credentials) in warnings[0]
    assert_no_secret("the log", exporter.stdout + exporter.stderr, {CANARY, *signatures(api)})
