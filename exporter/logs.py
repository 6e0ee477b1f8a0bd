"""Log lines as logfmt (the Prometheus ecosystem's default) or JSON, with secrets redacted.

Structured fields travel in ``extra={"fields": {...}}``, so a collection failure is
``msg="collection failed" project_id=web platform=cdn reason=timeout`` in logfmt and
the same keys in JSON, and Loki or Elasticsearch need no parsing rules.
"""

import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any, Literal

_REDACTED = "<redacted>"


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


class RedactSecrets(logging.Filter):
    """Replaces every occurrence of the given secrets in a record, the last line of defence.

    Nothing in the exporter logs a secret; this catches what a library might.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = [secret for secret in secrets if secret]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        if self._found(message):
            record.msg, record.args = self._redact(message), None
        # The structured fields and a traceback's text are printed too: a library's
        # exception message can carry anything it was handed.
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and any(self._found(str(v)) for v in fields.values()):
            record.fields = {
                key: self._redact(str(value)) if self._found(str(value)) else value
                for key, value in fields.items()
            }
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and self._found(record.exc_text):
            record.exc_text = self._redact(record.exc_text)
        return True

    def _found(self, text: str) -> bool:
        return any(secret in text for secret in self._secrets)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        return text


def configure_logging(
    level: str, log_format: Literal["logfmt", "json"], secrets: Iterable[str] = ()
) -> None:
    """Send the exporter's and its libraries' logs to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else LogfmtFormatter())
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
