"""The fault catalogue's answers: each one misbehaves, through the server's ``Exchange``.

:class:`simfaults.Faults` decides which request gets which; this module only says what
each does to the exchange: error pages, broken JSON, wrong types, resets, drips, hangs,
oversized bodies and echoed signatures.
"""

import http
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from exporter.simulator.hooks import Exchange
from exporter.simulator.protocol import (
    RESPONSE_ACTION,
    RET_SIGNATURE_ERROR,
    error_payload,
    json_bytes,
)

WrongTypes = Literal[
    "task_list_string",
    "progress_string",
    "huge_numbers",
    "negative_times",
    "null_fields",
    "missing_fields",
]
EchoPlace = Literal["message", "header", "malformed_header"]


def _html_error_page(status: int) -> str:
    title = f"{status} {http.HTTPStatus(status).phrase}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )


@dataclass(frozen=True)
class HttpError:
    status: int
    retry_after: str | None
    body: str | None
    headers: tuple[tuple[str, str], ...]

    def answer(self, exchange: Exchange) -> None:
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        body = _html_error_page(self.status) if self.body is None else self.body
        exchange.send(self.status, body.encode("utf-8"), "text/html; charset=utf-8", headers)


@dataclass(frozen=True)
class BadJson:
    def answer(self, exchange: Exchange) -> None:
        body = json_bytes(exchange.api_payload())
        # Any proper prefix of a JSON object lacks its closing brace: never valid JSON.
        exchange.send(200, body[: len(body) // 2], "application/json; charset=utf-8")


_LOGIN_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n"
    '<body><form method="post" action="/login"><input name="user"><input name="password" '
    'type="password"><button>Sign in</button></form></body></html>\n'
)


@dataclass(frozen=True)
class HtmlPage:
    def answer(self, exchange: Exchange) -> None:
        exchange.send(200, _LOGIN_PAGE.encode("utf-8"), "text/html; charset=utf-8")


@dataclass(frozen=True)
class RetCodeAnswer:
    code: int
    message: str

    def answer(self, exchange: Exchange) -> None:
        payload = error_payload(self.code, self.message)
        exchange.send(200, json_bytes(payload), "application/json; charset=utf-8")


@dataclass(frozen=True)
class EchoSignature:
    place: EchoPlace
    upper: bool

    def answer(self, exchange: Exchange) -> None:
        # This request's signature and the one before it: a gateway may quote any it saw.
        echoed = [sig.upper() if self.upper else sig for sig in exchange.signatures()[-2:]]
        quoted = " ".join(echoed) or "none"
        content_type = "application/json; charset=utf-8"
        if self.place == "message":
            payload = error_payload(RET_SIGNATURE_ERROR, f"Signature VerifyAC Error: {quoted}")
            exchange.send(200, json_bytes(payload), content_type)
        elif self.place == "header":
            body = json_bytes(exchange.api_payload())
            exchange.send(200, body, content_type, {"X-Echo-Signature": quoted})
        else:
            # No colon: the headers end there, http.client keeps it as a defect (and the
            # lines after it as no header), the client logs only the defect's kind.
            body = json_bytes(exchange.api_payload())
            exchange.send(200, body, content_type, raw_header_lines=[f"Signature {quoted}"])


def _urls(payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for task in payload.get("TaskList") or []:
        yield from task.get("UrlLists") or []


def _set_task_list_string(payload: dict[str, Any]) -> None:
    payload["TaskList"] = "not a list"


def _set_progress_string(payload: dict[str, Any]) -> None:
    for url in _urls(payload):
        url["Progress"] = "abc"


def _set_huge_numbers(payload: dict[str, Any]) -> None:
    payload["TotalCount"] = 10**30
    for task in payload.get("TaskList") or []:
        task["CreateTime"] = 10**20
    for url in _urls(payload):
        url.update(CreateTime=10**20, FinishTime=10**25, Progress=10**18)


def _set_negative_times(payload: dict[str, Any]) -> None:
    for task in payload.get("TaskList") or []:
        task["CreateTime"] = -task.get("CreateTime", 1)
    for url in _urls(payload):
        url.update(CreateTime=-1, FinishTime=-86400, Progress=-5)


def _set_null_fields(payload: dict[str, Any]) -> None:
    for url in _urls(payload):
        url.update(Url=None, Status=None, Progress=None, FinishTime=None)
    for task in payload.get("TaskList") or []:
        task.update(TaskId=None, Status=None, CreateTime=None, UrlLists=None)


def _set_missing_fields(payload: dict[str, Any]) -> None:
    payload.pop("TotalCount", None)
    for url in _urls(payload):
        for name in ("Status", "Progress", "FinishTime"):
            url.pop(name, None)
    for task in payload.get("TaskList") or []:
        for name in ("TaskId", "Status"):
            task.pop(name, None)


WRONG_TYPES: dict[WrongTypes, Callable[[dict[str, Any]], None]] = {
    "task_list_string": _set_task_list_string,
    "progress_string": _set_progress_string,
    "huge_numbers": _set_huge_numbers,
    "negative_times": _set_negative_times,
    "null_fields": _set_null_fields,
    "missing_fields": _set_missing_fields,
}


@dataclass(frozen=True)
class WrongTypesAnswer:
    variant: WrongTypes

    def answer(self, exchange: Exchange) -> None:
        payload = exchange.api_payload()
        WRONG_TYPES[self.variant](payload)
        exchange.send(200, json_bytes(payload), "application/json; charset=utf-8")


@dataclass(frozen=True)
class Drop:
    reset: bool

    def answer(self, exchange: Exchange) -> None:
        exchange.drop(reset=self.reset)


@dataclass(frozen=True)
class Drip:
    bytes_per_second: float

    def answer(self, exchange: Exchange) -> None:
        body = json_bytes(exchange.api_payload())
        exchange.send_head(200, "application/json; charset=utf-8", len(body))
        for index in range(len(body)):
            if exchange.pause(1 / self.bytes_per_second):
                exchange.drop(reset=False)
                return
            if not exchange.write(body[index : index + 1]):
                return


@dataclass(frozen=True)
class Hang:
    def answer(self, exchange: Exchange) -> None:
        exchange.pause(None)
        exchange.drop(reset=False)


OVERSIZED_HEAD = b'{"Action":"' + RESPONSE_ACTION.encode() + b'","RetCode":0,"TaskList":['
OVERSIZED_TAIL = b"]}"
_OVERSIZED_ID = b"@" * 12
_OVERSIZED_ITEM = json_bytes(
    {
        "TaskId": _OVERSIZED_ID.decode(),
        "CreateTime": 1700000000,
        "Status": "success",
        "UrlLists": [
            {
                "Url": f"https://cdn.example.com/releases/v9.9.9/file-{index}.bin",
                "CreateTime": 1700000000,
                "FinishTime": 1700000060,
                "Status": "success",
                "Progress": 100,
            }
            for index in range(1, 21)
        ],
    }
)
_STREAM_CHUNK_BYTES = 64 * 1024


def _oversized_chunks(n_bytes: int) -> Iterator[bytes]:
    """Yield a valid JSON answer of exactly ``n_bytes``, a chunk at a time, never all of it."""
    budget = n_bytes - len(OVERSIZED_HEAD) - len(OVERSIZED_TAIL)
    # k items and k-1 commas fit in the budget; whitespace pads the rest.
    count = (budget + 1) // (len(_OVERSIZED_ITEM) + 1)
    padding = budget - (count * (len(_OVERSIZED_ITEM) + 1) - 1) if count else budget
    yield OVERSIZED_HEAD
    chunk = bytearray()
    for index in range(count):
        if index:
            chunk += b","
        chunk += _OVERSIZED_ITEM.replace(_OVERSIZED_ID, b"%012d" % index)
        if len(chunk) >= _STREAM_CHUNK_BYTES:
            yield bytes(chunk)
            chunk.clear()
    yield bytes(chunk)
    for start in range(0, padding, _STREAM_CHUNK_BYTES):
        yield b" " * min(_STREAM_CHUNK_BYTES, padding - start)
    yield OVERSIZED_TAIL


@dataclass(frozen=True)
class Oversized:
    n_bytes: int
    content_length: bool

    def answer(self, exchange: Exchange) -> None:
        length = self.n_bytes if self.content_length else None
        exchange.send_head(200, "application/json; charset=utf-8", length)
        for chunk in _oversized_chunks(self.n_bytes):
            if not exchange.write(chunk):
                return
