"""Log lines as logfmt (the Prometheus ecosystem's default) or JSON, with secrets redacted.

Structured fields travel in ``extra={"fields": {...}}``, so a collection failure is
``msg="collection failed" project_id=web platform=cdn reason=timeout`` in logfmt and
the same keys in JSON, and Loki or Elasticsearch need no parsing rules.

Libraries' records (cheroot's, or any other's) are demoted to debug: a library may log
what a peer sent verbatim at warning (urllib3 did so with a malformed response header),
and at warning a peer could then write any text, a signature included, into our log.
An uncaught exception, in any thread, is a record too: Python would print it to stderr
as it is, past the redaction and the format.
"""

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Literal, Protocol

_REDACTED = "<redacted>"
_OWN_LOGGER = "exporter"


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": _timestamp(record),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    fields.update(getattr(record, "fields", {}))
    if record.exc_text:  # already formatted, and redacted, by RedactSecrets
        fields["error"] = record.exc_text
    elif record.exc_info:
        fields["error"] = logging.Formatter().formatException(record.exc_info)
    return fields


def _logfmt_value(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.3f}"
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=str)
    if text and not any(c in text for c in ' "=\\\n\t'):
        return text
    return json.dumps(text)


class LogfmtFormatter(logging.Formatter):
    """``key=value`` pairs on one line, values quoted when they need it."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in _fields(record).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


class Redactor(Protocol):
    """Something that knows secrets made at run time (the client's signatures)."""

    def redact(self, text: str) -> str:
        """``text`` with every secret it knows replaced."""
        ...


class RedactSecrets(logging.Filter):
    """Replaces every occurrence of the given secrets in a record, the last line of defence.

    Nothing in the exporter logs a secret; this catches what a library might. Fixed
    secrets (the private key) are matched in any case, and so are the secrets
    ``signatures`` knows: a gateway may echo a signature upper-cased.
    """

    def __init__(self, secrets: Iterable[str], signatures: Redactor | None = None) -> None:
        super().__init__()
        fixed = sorted({secret for secret in secrets if secret}, key=len, reverse=True)
        self._fixed = (
            re.compile("|".join(re.escape(secret) for secret in fixed), re.IGNORECASE)
            if fixed
            else None
        )
        self._signatures = signatures

    def filter(self, record: logging.LogRecord) -> bool:
        if self._fixed is None and self._signatures is None:
            return True
        record.msg, record.args = self._redact(record.getMessage()), None
        # The structured fields and a traceback's text are printed too: a library's
        # exception message can carry anything it was handed.
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {key: self._redact_value(value) for key, value in fields.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True

    def _redact_value(self, value: Any) -> Any:
        # A field keeps its type (a float is written to 3 places) unless it held a secret.
        text = str(value)
        redacted = self._redact(text)
        return value if redacted == text else redacted

    def _redact(self, text: str) -> str:
        if self._fixed is not None:
            text = self._fixed.sub(_REDACTED, text)
        if self._signatures is not None:
            text = self._signatures.redact(text)
        return text


class DemoteLibraries(logging.Filter):
    """Libraries' records become debug records, dropped unless debug is on.

    Their messages may carry what a peer sent (urllib3 quotes an unparsable response
    header at warning), so a peer must not be able to raise a line to warning. The
    exporter's own loggers keep their levels.
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self._level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == _OWN_LOGGER or record.name.startswith(_OWN_LOGGER + "."):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return self._level <= logging.DEBUG


def configure_logging(
    level: str,
    log_format: Literal["logfmt", "json"],
    secrets: Iterable[str] = (),
    signatures: Redactor | None = None,
) -> None:
    """Send the exporter's and its libraries' logs, and uncaught exceptions, to stderr in
    the chosen format.

    ``secrets`` (the private key) and whatever ``signatures`` knows are redacted from
    every record that gets through, the libraries' included.
    """
    numeric_level = logging.getLevelName(level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else LogfmtFormatter())
    handler.addFilter(DemoteLibraries(numeric_level))
    handler.addFilter(RedactSecrets(secrets, signatures))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    logging.getLogger(_OWN_LOGGER).error("uncaught exception", exc_info=error)


def _log_uncaught_in_thread(args: "threading.ExceptHookArgs") -> None:
    if args.exc_type is SystemExit:  # threading's own hook is silent about it too
        return
    thread = args.thread.name if args.thread else "unknown"
    logging.getLogger(_OWN_LOGGER).error(
        "uncaught exception", exc_info=args.exc_value, extra={"fields": {"thread": thread}}
    )
