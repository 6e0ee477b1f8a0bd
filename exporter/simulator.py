"""A simulated UCDN API gateway that answers ``DescribeNewUcdnPrefetchCacheTask``.

It is a real HTTP server on loopback speaking the provider's wire protocol: signed
requests as a GET query string, a POST form body or a POST JSON object, JSON answers
with ``RetCode``, offset paging and the documented filters. The exporter's ``--demo``
mode, the end-to-end and fault-injection tests and the benchmarks all talk to it.

Data comes from a dataset: :class:`StaticDataset` (fixed tasks, so a test knows what
the exporter must report), :class:`LiveDataset` (a moving, reproducible world for the
demo) or :func:`generate_tasks` (a large static set for benchmarks). :class:`Faults`
makes the server misbehave on demand, the way real gateways and networks do.

Run ``python -m exporter.simulator --help`` to serve it from its own process.
"""

import argparse
import bisect
import contextlib
import hmac
import http.server
import json
import random
import signal
import socket
import socketserver
import string
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import FrameType, TracebackType
from typing import Any, Literal, Protocol, Self, cast
from urllib.parse import parse_qsl

import msgspec

from exporter.signature import sign, wire_value

ACTION = "DescribeNewUcdnPrefetchCacheTask"
RESPONSE_ACTION = ACTION + "Response"

# Obviously fake keys: the demo signs and checks requests like the real gateway.
DEMO_PUBLIC_KEY = "demo-public-key"
DEMO_PRIVATE_KEY = "demo-private-key-not-a-secret"

# Error codes in the style of UCloud's gateway (errors are HTTP 200 with RetCode != 0).
RET_RATE_LIMITED = 153
RET_ACTION_MISSING = 160
RET_ACTION_NOT_EXIST = 161
RET_SIGNATURE_ERROR = 171
RET_PARAMS_INVALID = 230
# Every answer of the gateway carries its request id, which the provider's support asks for.
REQUEST_ID_HEADER = "X-UCLOUD-REQUEST-UUID"

DAY_SECONDS = 86400
MAX_REQUEST_BYTES = 1 << 20

Task = dict[str, Any]
"""A TaskInfo exactly as the API sends it."""

Target = tuple[str, bool]
"""``(project_id, is_dcdn)``; project id ``""`` is the account's default project."""

Encoding = Literal["query", "form", "json"]
WrongTypes = Literal[
    "task_list_string",
    "progress_string",
    "huge_numbers",
    "negative_times",
    "null_fields",
    "missing_fields",
]
EchoPlace = Literal["message", "header", "malformed_header"]


def _json_bytes(payload: object) -> bytes:
    # msgspec writes compact JSON a dozen times faster than json.dumps (UTF-8 rather than
    # \u escapes): a page of 5,000 URLs costs 1 ms instead of 12, so that a benchmark
    # times the exporter, not us.
    return msgspec.json.encode(payload)


def _error_payload(code: int, message: str) -> dict[str, Any]:
    return {"Action": RESPONSE_ACTION, "RetCode": code, "Message": message}


# ---------------------------------------------------------------------------
# Datasets


class Dataset(Protocol):
    """Where the server gets its tasks from."""

    def tasks(self, target: Target, begin: int, end: int) -> Sequence[Task]:
        """Return the target's tasks created in ``[begin, end]``, newest first, then by TaskId."""
        ...


def _create_time(task: Task) -> int | None:
    value = task.get("CreateTime")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class _SortedTasks:
    """One target's tasks, sorted once so a window is two bisections, not a sort."""

    dated: list[Task]  # newest first, then by TaskId
    keys: list[int]  # -CreateTime of ``dated``, ascending, for bisect
    undated: list[Task]  # no usable CreateTime: no window can exclude them

    @classmethod
    def of(cls, tasks: Sequence[Task]) -> "_SortedTasks":
        dated = [task for task in tasks if _create_time(task) is not None]
        dated.sort(key=lambda task: (-cast(int, _create_time(task)), str(task.get("TaskId", ""))))
        undated = [task for task in tasks if _create_time(task) is None]
        return cls(dated, [-cast(int, _create_time(task)) for task in dated], undated)

    def window(self, begin: int, end: int) -> list[Task]:
        first = bisect.bisect_left(self.keys, -end)
        last = bisect.bisect_right(self.keys, -begin)
        return self.dated[first:last] + self.undated


class StaticDataset:
    """Fixed tasks per target, served as given (anomalies included).

    Tasks whose CreateTime is not an integer cannot be filtered by time, so every
    window includes them, after the others.
    """

    def __init__(self, tasks: Mapping[Target, Sequence[Task]]) -> None:
        self._lock = threading.Lock()
        self._targets = {target: _SortedTasks.of(listed) for target, listed in tasks.items()}

    def set_tasks(self, target: Target, tasks: Sequence[Task]) -> None:
        """Replace one target's tasks, e.g. to change the set while a client pages through it."""
        sorted_tasks = _SortedTasks.of(tasks)
        with self._lock:
            self._targets[target] = sorted_tasks

    def tasks(self, target: Target, begin: int, end: int) -> list[Task]:
        """Return the target's tasks created in ``[begin, end]``, newest first."""
        with self._lock:
            sorted_tasks = self._targets.get(target)
        return sorted_tasks.window(begin, end) if sorted_tasks else []


# The live world: one task per TASK_SLOT_SECONDS slot, created somewhere in the
# middle of its slot, so tasks arrive 30-90 s apart and slot k's task is older than
# slot k+1's. Every number below is a rate or a bound of that simulated world.
TASK_SLOT_SECONDS = 60
TASK_OFFSET_RANGE = (15, 45)
MAX_URLS_PER_TASK = 20
STUCK_TASK_RATE = 0.03  # tasks with URLs that take many hours
STUCK_SECONDS = (6 * 3600, 30 * 3600)
LONG_TAIL_RATE = 0.08
USUAL_SECONDS = (10, 1800)
LONG_TAIL_SECONDS = (1800, 4 * 3600)
MEAN_WAIT_SECONDS = 20
MAX_WAIT_SECONDS = 600
# Failures cluster, as when an origin is down: 12% of tasks, 40% of their URLs, ~5% overall.
FAILING_TASK_RATE = 0.12
URL_FAILURE_RATE_IN_FAILING_TASK = 0.4
# Anomalies the provider's own sample shows, at low rates.
UNKNOW_STATUS_RATE = 0.005
RANDOM_STATUS_RATE = 0.003
FINISH_BEFORE_CREATE_RATE = 0.005
PROGRESS_OVER_100_RATE = 0.005


@dataclass(frozen=True, slots=True)
class _UrlPlan:
    """One URL's whole life, fixed when its task is created; rendering picks a moment."""

    url: str
    wait: int  # seconds from task creation until the transfer starts
    duration: int  # seconds the transfer takes, until success or failure
    final_progress: int  # 100 on success, where it stopped on failure
    status_override: str | None  # "unknow" or a random string instead of the real status
    finish_skew: int  # when > 0, FinishTime is this many seconds before CreateTime
    progress_overshoot: int  # added to Progress 100 on success


@dataclass(frozen=True, slots=True)
class _TaskPlan:
    task_id: str
    create_time: int
    urls: tuple[_UrlPlan, ...]
    status_override: str | None


def _log_uniform(rng: random.Random, bounds: tuple[int, int]) -> int:
    low, high = bounds
    return int(low * (high / low) ** rng.random())


def _odd_status(rng: random.Random, rate_unknow: float, rate_random: float) -> str | None:
    draw = rng.random()
    if draw < rate_unknow:
        return "unknow"
    if draw < rate_unknow + rate_random:
        return "".join(rng.choices(string.ascii_letters, k=8))
    return None


def _plan_url(rng: random.Random, url: str, *, stuck: bool, failing: bool) -> _UrlPlan:
    if stuck:
        duration = rng.randint(*STUCK_SECONDS)
    elif rng.random() < LONG_TAIL_RATE:
        duration = _log_uniform(rng, LONG_TAIL_SECONDS)
    else:
        duration = _log_uniform(rng, USUAL_SECONDS)
    fails = failing and rng.random() < URL_FAILURE_RATE_IN_FAILING_TASK
    return _UrlPlan(
        url=url,
        wait=min(int(rng.expovariate(1 / MEAN_WAIT_SECONDS)), MAX_WAIT_SECONDS),
        duration=duration,
        final_progress=rng.randint(0, 99) if fails else 100,
        status_override=_odd_status(rng, UNKNOW_STATUS_RATE, RANDOM_STATUS_RATE),
        finish_skew=rng.randint(1, 3600) if rng.random() < FINISH_BEFORE_CREATE_RATE else 0,
        progress_overshoot=rng.randint(1, 50) if rng.random() < PROGRESS_OVER_100_RATE else 0,
    )


@lru_cache(maxsize=16384)
def _plan_task(seed: int, target: Target, slot: int) -> _TaskPlan:
    # A string seed is hashed with SHA-512: stable across runs and PYTHONHASHSEED.
    rng = random.Random(f"{seed}/{target[0]}/{target[1]}/{slot}")
    create_time = slot * TASK_SLOT_SECONDS + rng.randrange(*TASK_OFFSET_RANGE)
    version = f"v{rng.randint(1, 3)}.{rng.randint(0, 20)}.{rng.randint(0, 40)}"
    stuck = rng.random() < STUCK_TASK_RATE
    failing = rng.random() < FAILING_TASK_RATE
    urls = tuple(
        _plan_url(
            rng,
            f"https://cdn.example.com/releases/{version}/file-{index}.bin",
            stuck=stuck and (index == 1 or rng.random() < 0.5),
            failing=failing,
        )
        for index in range(1, rng.randint(1, MAX_URLS_PER_TASK) + 1)
    )
    return _TaskPlan(
        # The slot in hex makes the id unique; the fixed-width suffix makes it look like one.
        task_id=f"pf{slot:x}{rng.getrandbits(24):06x}",
        create_time=create_time,
        urls=urls,
        status_override=_odd_status(rng, UNKNOW_STATUS_RATE, RANDOM_STATUS_RATE),
    )


def _render_url(plan: _UrlPlan, create_time: int, now: int) -> tuple[str, dict[str, Any]]:
    """Return the URL's true phase at ``now`` and its UrlProgressInfo as the API shows it."""
    start = create_time + plan.wait
    finish = start + plan.duration
    finish_time = 0
    if now < start:
        phase, progress = "wait", 0
    elif now < finish:
        phase = "process"
        progress = min(99, plan.final_progress * (now - start) // plan.duration)
    else:
        phase = "success" if plan.final_progress == 100 else "failure"
        progress = plan.final_progress + (plan.progress_overshoot if phase == "success" else 0)
        finish_time = create_time - plan.finish_skew if plan.finish_skew else finish
    info = {
        "Url": plan.url,
        "CreateTime": create_time,
        "FinishTime": finish_time,
        "Status": plan.status_override or phase,
        "Progress": progress,
    }
    return phase, info


def _task_status(url_phases: Sequence[str]) -> str:
    """Derive a task's status from its URLs' statuses (the real ones, not anomalies)."""
    if all(phase == "wait" for phase in url_phases):
        return "wait"
    if any(phase in ("wait", "process") for phase in url_phases):
        return "process"
    return "failure" if "failure" in url_phases else "success"


def _render_task(plan: _TaskPlan, now: int) -> Task:
    rendered = [_render_url(url, plan.create_time, now) for url in plan.urls]
    return {
        "TaskId": plan.task_id,
        "CreateTime": plan.create_time,
        "Status": plan.status_override or _task_status([phase for phase, _ in rendered]),
        "UrlLists": [info for _, info in rendered],
    }


class LiveDataset:
    """The demo's moving world: reproducible, its state a pure function of (seed, target, time).

    Every target asked about gets its own tasks: one every 30-90 s, each with 1-20 URLs
    that wait, transfer (Progress rising to 99) and succeed or fail (about 5%), most
    within 10 s to 30 min, a long tail within hours, and about 3% of tasks stuck for
    6-30 h. Tasks exist from ``history`` seconds before now, so the demo starts with a
    full day. A few URLs and tasks carry the provider's anomalies: status ``unknow`` or
    a random string, FinishTime before CreateTime, Progress over 100.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        clock: Callable[[], float] = time.time,
        history: int = DAY_SECONDS,
    ) -> None:
        self.seed = seed
        self._clock = clock
        self._history = history
        # The pages of one scrape ask for the same window within the same second:
        # keep each target's last rendering rather than render a day per page.
        self._lock = threading.Lock()
        self._last: dict[Target, tuple[tuple[int, int, int], list[Task]]] = {}

    def tasks(self, target: Target, begin: int, end: int) -> list[Task]:
        """Return the target's tasks created in ``[begin, end]`` as they are now, newest first.

        The task dicts may be shared with other callers: read them, don't change them.
        """
        now = int(self._clock())
        key = (now, max(begin, now - self._history), min(end, now))
        with self._lock:
            last = self._last.get(target)
        if last is not None and last[0] == key:
            return last[1]
        rendered = self._render(target, *key)
        with self._lock:
            self._last[target] = (key, rendered)
        return rendered

    def _render(self, target: Target, now: int, begin: int, end: int) -> list[Task]:
        plans = (
            _plan_task(self.seed, target, slot)
            for slot in range(end // TASK_SLOT_SECONDS, begin // TASK_SLOT_SECONDS - 1, -1)
        )
        return [_render_task(plan, now) for plan in plans if begin <= plan.create_time <= end]


# Share of each task status in generate_tasks, cumulative.
_GENERATED_STATUS_MIX = (
    ("success", 0.72),
    ("failure", 0.80),
    ("process", 0.92),
    ("wait", 0.98),
    ("unknow", 1.0),
)


def _generated_url(rng: random.Random, url: str, status: str, create_time: int, now: int) -> Task:
    # Within 10 s .. 30 min, log-uniform: the bulk of real transfers.
    elapsed = int(10 * 180 ** rng.random())
    done = status in ("success", "failure", "unknow")
    progress = {"success": 100, "wait": 0}.get(status, int(rng.random() * 100))
    return {
        "Url": url,
        "CreateTime": create_time,
        "FinishTime": min(now, create_time + elapsed) if done else 0,
        "Status": status,
        "Progress": progress,
    }


def _generated_url_status(rng: random.Random, task_status: str, index: int) -> str:
    if task_status == "failure":
        return "failure" if index == 0 or rng.random() < 0.1 else "success"
    if task_status == "process":
        draw = rng.random()
        return "process" if index == 0 or draw < 0.3 else "wait" if draw < 0.5 else "success"
    return task_status


def generate_tasks(
    count: int,
    urls_per_task: int,
    *,
    now: int,
    seed: int = 0,
    lookback: int = DAY_SECONDS,
) -> list[Task]:
    """Generate ``count`` tasks of ``urls_per_task`` URLs each, created over the lookback window.

    A realistic mix of task statuses (mostly success, some failure, process, wait and
    ``unknow``) with URL statuses that agree with them; TaskIds are unique. Fast enough
    for benchmarks: 2,000 x 50 URLs in well under a second.
    """
    rng = random.Random(seed)
    tasks: list[Task] = []
    for index in range(count):
        create_time = now - int(rng.random() * lookback)
        draw = rng.random()
        status = next(name for name, share in _GENERATED_STATUS_MIX if draw < share)
        prefix = f"https://cdn.example.com/releases/v{index // 100}.{index % 100}.0/file-"
        urls = [
            _generated_url(
                rng,
                f"{prefix}{position}.bin",
                _generated_url_status(rng, status, position),
                create_time,
                now,
            )
            for position in range(urls_per_task)
        ]
        task_id = f"gen{seed}-{index:06d}"
        tasks.append(
            {"TaskId": task_id, "CreateTime": create_time, "Status": status, "UrlLists": urls}
        )
    return tasks


# ---------------------------------------------------------------------------
# The API's semantics


class _ParamError(ValueError):
    """A request parameter the gateway would reject; the message names it."""


def _optional_int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise _ParamError(f"Params [{name}] not available") from None


def _is_dcdn(params: Mapping[str, str]) -> bool:
    raw = params.get("IsDcdn", "false")
    if raw not in ("true", "false"):
        raise _ParamError("Params [IsDcdn] not available")
    return raw == "true"


def _offset_of(params: Mapping[str, str]) -> int:
    """The request's Offset for choosing faults; 0 when absent or not a number."""
    try:
        return int(params.get("Offset", "0"))
    except ValueError:
        return 0


def target_of(params: Mapping[str, str]) -> Target | None:
    """Return the request's target, or None when IsDcdn is not ``true``/``false``."""
    try:
        return params.get("ProjectId", ""), _is_dcdn(params)
    except _ParamError:
        return None


@dataclass(frozen=True)
class _Query:
    """A validated request: which tasks, which page."""

    target: Target
    begin: int
    end: int
    status: str | None
    task_ids: frozenset[str] | None
    offset: int
    limit: int | None

    @classmethod
    def parse(cls, params: Mapping[str, str], now: int) -> "_Query":
        begin = _optional_int(params, "BeginTime")
        end = _optional_int(params, "EndTime")
        if end is not None and begin is None:
            raise _ParamError("Params [BeginTime] required when EndTime is set")
        end = now if end is None else end
        offset = _optional_int(params, "Offset") or 0
        limit = _optional_int(params, "Limit")
        if offset < 0 or (limit is not None and limit < 0):
            raise _ParamError("Params [Offset] or [Limit] not available")
        task_ids = frozenset(value for name, value in params.items() if _is_task_id_param(name))
        return cls(
            target=(params.get("ProjectId", ""), _is_dcdn(params)),
            begin=end - DAY_SECONDS if begin is None else begin,
            end=end,
            status=params.get("Status") or None,
            task_ids=task_ids or None,
            offset=offset,
            limit=limit,
        )

    def matches(self, task: Task) -> bool:
        if self.status is not None and task.get("Status") != self.status:
            return False
        return self.task_ids is None or task.get("TaskId") in self.task_ids

    def page(self, tasks: Sequence[Task]) -> Sequence[Task]:
        stop = None if self.limit is None else self.offset + self.limit
        return tasks[self.offset : stop]


def _is_task_id_param(name: str) -> bool:
    prefix, _, index = name.partition(".")
    return prefix == "TaskId" and index.isdigit()


# ---------------------------------------------------------------------------
# Faults


class _Exchange(Protocol):
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


class _Fault(Protocol):
    def answer(self, exchange: _Exchange) -> None: ...


def _html_error_page(status: int) -> str:
    title = f"{status} {http.HTTPStatus(status).phrase}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )


@dataclass(frozen=True)
class _HttpError:
    status: int
    retry_after: str | None
    body: str | None
    headers: tuple[tuple[str, str], ...]

    def answer(self, exchange: _Exchange) -> None:
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        body = _html_error_page(self.status) if self.body is None else self.body
        exchange.send(self.status, body.encode("utf-8"), "text/html; charset=utf-8", headers)


@dataclass(frozen=True)
class _BadJson:
    def answer(self, exchange: _Exchange) -> None:
        body = _json_bytes(exchange.api_payload())
        # Any proper prefix of a JSON object lacks its closing brace: never valid JSON.
        exchange.send(200, body[: len(body) // 2], "application/json; charset=utf-8")


_LOGIN_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n"
    '<body><form method="post" action="/login"><input name="user"><input name="password" '
    'type="password"><button>Sign in</button></form></body></html>\n'
)


@dataclass(frozen=True)
class _HtmlPage:
    def answer(self, exchange: _Exchange) -> None:
        exchange.send(200, _LOGIN_PAGE.encode("utf-8"), "text/html; charset=utf-8")


@dataclass(frozen=True)
class _RetCode:
    code: int
    message: str

    def answer(self, exchange: _Exchange) -> None:
        payload = _error_payload(self.code, self.message)
        exchange.send(200, _json_bytes(payload), "application/json; charset=utf-8")


@dataclass(frozen=True)
class _EchoSignature:
    place: EchoPlace
    upper: bool

    def answer(self, exchange: _Exchange) -> None:
        # This request's signature and the one before it: a gateway may quote any it saw.
        echoed = [sig.upper() if self.upper else sig for sig in exchange.signatures()[-2:]]
        quoted = " ".join(echoed) or "none"
        content_type = "application/json; charset=utf-8"
        if self.place == "message":
            payload = _error_payload(RET_SIGNATURE_ERROR, f"Signature VerifyAC Error: {quoted}")
            exchange.send(200, _json_bytes(payload), content_type)
        elif self.place == "header":
            body = _json_bytes(exchange.api_payload())
            exchange.send(200, body, content_type, {"X-Echo-Signature": quoted})
        else:
            # No colon: http.client keeps it as a defect, urllib3 logs it with the line.
            body = _json_bytes(exchange.api_payload())
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


_WRONG_TYPES: dict[WrongTypes, Callable[[dict[str, Any]], None]] = {
    "task_list_string": _set_task_list_string,
    "progress_string": _set_progress_string,
    "huge_numbers": _set_huge_numbers,
    "negative_times": _set_negative_times,
    "null_fields": _set_null_fields,
    "missing_fields": _set_missing_fields,
}


@dataclass(frozen=True)
class _WrongTypes:
    variant: WrongTypes

    def answer(self, exchange: _Exchange) -> None:
        payload = exchange.api_payload()
        _WRONG_TYPES[self.variant](payload)
        exchange.send(200, _json_bytes(payload), "application/json; charset=utf-8")


@dataclass(frozen=True)
class _Drop:
    reset: bool

    def answer(self, exchange: _Exchange) -> None:
        exchange.drop(reset=self.reset)


@dataclass(frozen=True)
class _Drip:
    bytes_per_second: float

    def answer(self, exchange: _Exchange) -> None:
        body = _json_bytes(exchange.api_payload())
        exchange.send_head(200, "application/json; charset=utf-8", len(body))
        for index in range(len(body)):
            if exchange.pause(1 / self.bytes_per_second):
                exchange.drop(reset=False)
                return
            if not exchange.write(body[index : index + 1]):
                return


@dataclass(frozen=True)
class _Hang:
    def answer(self, exchange: _Exchange) -> None:
        exchange.pause(None)
        exchange.drop(reset=False)


_OVERSIZED_HEAD = b'{"Action":"' + RESPONSE_ACTION.encode() + b'","RetCode":0,"TaskList":['
_OVERSIZED_TAIL = b"]}"
_OVERSIZED_ID = b"@" * 12
_OVERSIZED_ITEM = _json_bytes(
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
    budget = n_bytes - len(_OVERSIZED_HEAD) - len(_OVERSIZED_TAIL)
    # k items and k-1 commas fit in the budget; whitespace pads the rest.
    count = (budget + 1) // (len(_OVERSIZED_ITEM) + 1)
    padding = budget - (count * (len(_OVERSIZED_ITEM) + 1) - 1) if count else budget
    yield _OVERSIZED_HEAD
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
    yield _OVERSIZED_TAIL


@dataclass(frozen=True)
class _Oversized:
    n_bytes: int
    content_length: bool

    def answer(self, exchange: _Exchange) -> None:
        length = self.n_bytes if self.content_length else None
        exchange.send_head(200, "application/json; charset=utf-8", length)
        for chunk in _oversized_chunks(self.n_bytes):
            if not exchange.write(chunk):
                return


@dataclass
class _Rule:
    """A fault and how long it lasts: ``remaining`` requests, or None until cleared."""

    remaining: int | None
    target: Target | None
    from_offset: int

    def applies_to(self, target: Target | None, offset: int) -> bool:
        return (self.target is None or self.target == target) and offset >= self.from_offset

    def consume(self) -> None:
        if self.remaining is not None:
            self.remaining -= 1


@dataclass
class _DelayRule(_Rule):
    seconds: float


@dataclass
class _AnswerRule(_Rule):
    fault: _Fault


class Faults:
    """Misbehaviour on demand; thread-safe.

    Each method adds a fault for the next ``times`` requests (None: until
    :meth:`clear`), for every target or only ``target``, and for every page or only
    those from ``from_offset`` on (so that pages past the end can fail while the
    pages before it are answered). Delays add up and come on top
    of anything else; among the other faults, the first added that applies answers the
    request, so ``http_error(503, times=1)`` then ``bad_json(times=1)`` scripts two
    requests in order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._delays: list[_DelayRule] = []
        self._answers: list[_AnswerRule] = []

    def delay(
        self,
        seconds: float,
        *,
        times: int | None = None,
        target: Target | None = None,
        from_offset: int = 0,
    ) -> None:
        """Wait ``seconds`` before answering (interrupted by the server's stop)."""
        with self._lock:
            self._delays.append(_DelayRule(_checked_times(times), target, from_offset, seconds))

    def http_error(
        self,
        status: int,
        *,
        retry_after: str | None = None,
        body: str | None = None,
        headers: Mapping[str, str] | None = None,
        times: int | None = None,
        target: Target | None = None,
        from_offset: int = 0,
    ) -> None:
        """Answer with HTTP ``status`` and an HTML body (an nginx-style error page by default).

        ``headers`` are sent too; an ``X-UCLOUD-REQUEST-UUID`` among them replaces the
        random request id.
        """
        fault = _HttpError(status, retry_after, body, tuple((headers or {}).items()))
        self._add(fault, times, target, from_offset)

    def bad_json(
        self, *, times: int | None = None, target: Target | None = None, from_offset: int = 0
    ) -> None:
        """Answer 200 ``application/json`` with the real answer cut in half."""
        self._add(_BadJson(), times, target, from_offset)

    def html_page(
        self, *, times: int | None = None, target: Target | None = None, from_offset: int = 0
    ) -> None:
        """Answer 200 ``text/html`` with a login page, as a captive proxy would."""
        self._add(_HtmlPage(), times, target, from_offset)

    def ret_code(
        self,
        code: int,
        message: str,
        *,
        times: int | None = None,
        target: Target | None = None,
        from_offset: int = 0,
    ) -> None:
        """Answer 200 with an API error: RetCode ``code`` and ``message``."""
        self._add(_RetCode(code, message), times, target, from_offset)

    def wrong_types(
        self,
        variant: WrongTypes = "progress_string",
        *,
        times: int | None = None,
        target: Target | None = None,
        from_offset: int = 0,
    ) -> None:
        """Answer 200 with the real answer's types broken: see :data:`WrongTypes`."""
        if variant not in _WRONG_TYPES:
            raise ValueError(f"unknown wrong_types variant {variant!r}")
        self._add(_WrongTypes(variant), times, target, from_offset)

    def reset(
        self, *, times: int | None = None, target: Target | None = None, from_offset: int = 0
    ) -> None:
        """Read the request, then close the connection with a TCP RST."""
        self._add(_Drop(reset=True), times, target, from_offset)

    def close_without_answer(
        self, *, times: int | None = None, target: Target | None = None, from_offset: int = 0
    ) -> None:
        """Read the request, then close the connection cleanly without answering."""
        self._add(_Drop(reset=False), times, target, from_offset)

    def drip(
        self,
        bytes_per_second: float,
        *,
        times: int | None = None,
        target: Target | None = None,
        from_offset: int = 0,
    ) -> None:
        """Send the headers (full Content-Length), then the body a byte at a time."""
        if bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be positive")
        self._add(_Drip(bytes_per_second), times, target, from_offset)

    def hang(
        self, *, times: int | None = None, target: Target | None = None, from_offset: int = 0
    ) -> None:
        """Read the request and never answer, until the server stops."""
        self._add(_Hang(), times, target, from_offset)

    def oversized(
        self,
        n_bytes: int,
        *,
        content_length: bool = True,
        times: int | None = None,
        target: Target | None = None,
        from_offset: int = 0,
    ) -> None:
        """Stream a valid JSON answer of exactly ``n_bytes``, in bounded memory.

        Without ``content_length`` the body ends when the connection closes, so a client
        cannot reject it by its header alone.
        """
        minimum = len(_OVERSIZED_HEAD) + len(_OVERSIZED_TAIL)
        if n_bytes < minimum:
            raise ValueError(f"n_bytes must be at least {minimum}")
        self._add(_Oversized(n_bytes, content_length), times, target, from_offset)

    def echo_signature(
        self,
        place: EchoPlace,
        *,
        upper: bool = False,
        times: int | None = None,
        target: Target | None = None,
        from_offset: int = 0,
    ) -> None:
        """Quote the request's signature and the one received before it back to the client.

        ``message``: a RetCode 171 answer with them in its Message; ``header``: the real
        answer with them in a header; ``malformed_header``: the real answer with them in
        a header line without a colon, which urllib3 reports (and quotes) at warning.
        ``upper`` sends them upper-cased.
        """
        self._add(_EchoSignature(place, upper), times, target, from_offset)

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._delays.clear()
            self._answers.clear()

    def take(self, target: Target | None, offset: int = 0) -> tuple[float, _Fault | None]:
        """Consume what applies to one request: the total delay and the fault that answers it."""
        with self._lock:
            delays = [rule for rule in self._delays if rule.applies_to(target, offset)]
            answer = next((rule for rule in self._answers if rule.applies_to(target, offset)), None)
            for rule in [*delays, *([answer] if answer else [])]:
                rule.consume()
            self._delays = [rule for rule in self._delays if rule.remaining != 0]
            self._answers = [rule for rule in self._answers if rule.remaining != 0]
        return sum(rule.seconds for rule in delays), answer.fault if answer else None

    def _add(
        self, fault: _Fault, times: int | None, target: Target | None, from_offset: int
    ) -> None:
        with self._lock:
            self._answers.append(_AnswerRule(_checked_times(times), target, from_offset, fault))


def _checked_times(times: int | None) -> int | None:
    if times is not None and times < 1:
        raise ValueError("times must be at least 1, or None for until cleared")
    return times


# ---------------------------------------------------------------------------
# The server


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    received: float  # time.monotonic() on arrival, before any delay
    method: str
    path: str  # the request target, query string included
    encoding: Encoding
    params: Mapping[str, str]  # as sent on the wire (JSON values through wire_value)
    target: Target | None  # None when IsDcdn is not true/false


def _json_params(body: bytes) -> dict[str, str]:
    try:
        decoded = json.loads(body)
    except ValueError:
        raise _ParamError("request body is not valid JSON") from None
    if not isinstance(decoded, dict):
        raise _ParamError("request body is not a JSON object")
    params = {}
    for name, value in decoded.items():
        if not isinstance(value, str | int | float):
            raise _ParamError(f"Params [{name}] not available")
        params[name] = wire_value(value)
    return params


def _form_params(text: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(text.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        raise _ParamError("request is not UTF-8") from None


class _Server(http.server.ThreadingHTTPServer):
    """The HTTP server, knowing its :class:`SimulatedApi`."""

    daemon_threads = True
    api: "SimulatedApi"

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves its own host name: a DNS lookup we don't need.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer is normal here; anything else is a bug to show.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    """One connection: parses, records, applies faults, answers."""

    protocol_version = "HTTP/1.1"  # keep-alive, like a real gateway
    _params: dict[str, str]
    _problem: str | None  # why the parameters could not be read, if they could not
    _payload: dict[str, Any] | None  # the real answer, computed at most once per request
    _next_request_id: str | None = None  # a fault's request id for the next answer
    _headers_buffer: list[bytes]  # http.server's own, absent from its type stubs

    @property
    def _api(self) -> "SimulatedApi":
        return cast(_Server, self.server).api

    def setup(self) -> None:
        super().setup()
        self._api._track(self.connection, open_=True)

    def finish(self) -> None:
        self._api._track(self.connection, open_=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests read the request log instead."""

    def do_GET(self) -> None:
        """Parameters in the query string."""
        _, _, query = self.path.partition("?")
        self._serve("query", lambda: _form_params(query.encode("utf-8")))

    def do_POST(self) -> None:
        """Parameters in a form or JSON body."""
        body = self._read_body()
        if body is None:
            return
        media = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media == "application/json":
            self._serve("json", lambda: _json_params(body))
        else:
            self._serve("form", lambda: _form_params(body))

    def _read_body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_REQUEST_BYTES:
            self.send_error(413 if length > 0 else 400)
            return None
        return self.rfile.read(length)

    def _serve(self, encoding: Encoding, parse: Callable[[], dict[str, str]]) -> None:
        received = time.monotonic()
        self._params, self._problem, self._payload = {}, None, None
        try:
            self._params = parse()
        except _ParamError as error:
            self._problem = str(error)
        target = target_of(self._params)
        self._api._record(
            RecordedRequest(received, self.command, self.path, encoding, self._params, target)
        )
        delay, fault = self._api.faults.take(target, _offset_of(self._params))
        if delay and self.pause(delay):
            self.drop(reset=False)
            return
        if fault is not None:
            fault.answer(self)
        else:
            self.send(200, _json_bytes(self._real_payload()), "application/json; charset=utf-8")

    def _real_payload(self) -> dict[str, Any]:
        if self._payload is None:
            self._payload = (
                self._api.answer(self._params)
                if self._problem is None
                else _error_payload(RET_PARAMS_INVALID, self._problem)
            )
        return self._payload

    def send_response(self, code: int, message: str | None = None) -> None:
        """The status line, then the request id every answer of the gateway carries."""
        super().send_response(code, message)
        request_id, self._next_request_id = self._next_request_id, None
        self.send_header(REQUEST_ID_HEADER, request_id or str(uuid.uuid4()))

    # The _Exchange protocol, for faults.

    def signatures(self) -> list[str]:
        """The signatures received so far, oldest first, this request's last (if it had one)."""
        return [
            request.params["Signature"]
            for request in self._api.requests
            if "Signature" in request.params
        ]

    def api_payload(self) -> dict[str, Any]:
        """The answer the server would give, as a private copy faults may change."""
        # A JSON round trip deep-copies, so no fault can touch the dataset's own tasks.
        return cast(dict[str, Any], json.loads(_json_bytes(self._real_payload())))

    def send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
        raw_header_lines: Sequence[str] = (),
    ) -> None:
        """Send a complete response with a Content-Length."""
        self.send_head(status, content_type, len(body), headers, raw_header_lines)
        self.write(body)

    def send_head(
        self,
        status: int,
        content_type: str,
        content_length: int | None,
        headers: Mapping[str, str] | None = None,
        raw_header_lines: Sequence[str] = (),
    ) -> None:
        """Send status line and headers; without a length the body ends at connection close.

        A ``X-UCLOUD-REQUEST-UUID`` in ``headers`` replaces the random one; each of
        ``raw_header_lines`` is sent as it is, after the others.
        """
        extra = dict(headers or {})
        self._next_request_id = extra.pop(REQUEST_ID_HEADER, None)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if content_length is None:
            self.send_header("Connection", "close")
        else:
            self.send_header("Content-Length", str(content_length))
        for name, value in extra.items():
            self.send_header(name, value)
        for line in raw_header_lines:
            self._headers_buffer.append(f"{line}\r\n".encode("latin-1", "strict"))
        self.end_headers()

    def write(self, data: bytes) -> bool:
        """Send part of the body; False (and no more keep-alive) once the client is gone."""
        try:
            self.wfile.write(data)
        except OSError:
            self.close_connection = True
            return False
        return True

    def drop(self, *, reset: bool) -> None:
        """Close the connection now; with ``reset`` the kernel sends RST instead of FIN."""
        self.close_connection = True
        if reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The read file holds a reference to the socket: close it first or close() is a no-op.
        self.rfile.close()
        self.connection.close()

    def pause(self, seconds: float | None) -> bool:
        """Wait ``seconds`` (None: forever) unless the server stops first; True if it did."""
        return self._api._stopping.wait(seconds)


class SimulatedApi:
    """A UCDN API gateway on loopback serving a dataset, with faults on demand.

    Use as a context manager, or :meth:`start` and :meth:`stop`. Requests are served in
    parallel, each in its own daemon thread, on any path. ``total_count_error`` is added
    to every TotalCount so tests can make it lie. ``clock`` sets "now" for the default
    EndTime: give a :class:`LiveDataset` the same clock.
    """

    def __init__(
        self,
        public_key: str,
        private_key: str,
        dataset: Dataset,
        *,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.public_key = public_key
        self._private_key = private_key
        self.dataset = dataset
        self.faults = faults if faults is not None else Faults()
        self.total_count_error = 0
        self._clock = clock
        self._address = (host, port)
        self._server: _Server | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        server = _Server(self._address, _Handler)
        server.api = self
        self._server = server
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    @property
    def url(self) -> str:
        """The base URL to send requests to, e.g. ``http://127.0.0.1:PORT/``."""
        if self._server is None:
            raise RuntimeError("not started")
        return f"http://{self._server.server_name}:{self._server.server_port}/"

    def stop(self) -> None:
        """Stop serving and cut every open connection: delays, drips and hangs end at once."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                connection.shutdown(socket.SHUT_RDWR)
        server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received since start or :meth:`reset_log`, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def request_count(self, project_id: str | None = None, is_dcdn: bool | None = None) -> int:
        """How many requests were received, optionally only for a project and/or platform."""
        return sum(
            1
            for record in self.requests
            if (project_id is None or (record.target and record.target[0] == project_id))
            and (is_dcdn is None or (record.target and record.target[1] == is_dcdn))
        )

    def reset_log(self) -> None:
        """Forget the requests received so far."""
        with self._lock:
            self._requests.clear()

    def answer(self, params: Mapping[str, str]) -> dict[str, Any]:
        """The API's answer to one request's parameters, as the gateway would give it."""
        problem = self._auth_problem(params)
        if problem is not None:
            return problem
        try:
            query = _Query.parse(params, now=int(self._clock()))
        except _ParamError as error:
            return _error_payload(RET_PARAMS_INVALID, str(error))
        window = self.dataset.tasks(query.target, query.begin, query.end)
        matched = [task for task in window if query.matches(task)]
        return {
            "Action": RESPONSE_ACTION,
            "RetCode": 0,
            "TotalCount": len(matched) + self.total_count_error,
            "TaskList": list(query.page(matched)),
        }

    def _auth_problem(self, params: Mapping[str, str]) -> dict[str, Any] | None:
        action = params.get("Action")
        if not action:
            return _error_payload(RET_ACTION_MISSING, "Missing Action")
        if action != ACTION:
            return _error_payload(RET_ACTION_NOT_EXIST, f"Action [{action}] not exist")
        signature = params.get("Signature")
        if not signature:
            return _error_payload(RET_SIGNATURE_ERROR, "Missing signature")
        if params.get("PublicKey") != self.public_key:
            return _error_payload(RET_SIGNATURE_ERROR, "PublicKey does not exist")
        if not hmac.compare_digest(signature, sign(params, self._private_key)):
            return _error_payload(RET_SIGNATURE_ERROR, "Signature VerifyAC Error")
        return None

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(record)

    def _track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


# ---------------------------------------------------------------------------
# Command line


def _listen_address(text: str) -> tuple[str, int]:
    host, separator, port = text.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host, int(port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.simulator",
        description="Serve a simulated UCDN prefetch API (demo keys) until SIGTERM or SIGINT. "
        "Prints the base URL as the first line.",
    )
    parser.add_argument(
        "--listen",
        type=_listen_address,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="address to bind (default 127.0.0.1:0)",
    )
    data = parser.add_mutually_exclusive_group()
    data.add_argument(
        "--tasks",
        type=int,
        metavar="N",
        help="serve N generated tasks for the default project on CDN",
    )
    data.add_argument(
        "--live",
        action="store_true",
        help="serve the moving demo world for every target (the default)",
    )
    parser.add_argument(
        "--urls-per-task",
        type=int,
        default=10,
        metavar="M",
        help="URLs per generated task (default 10)",
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds to wait before every answer (default 0)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="K", help="random seed (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator from the command line."""
    args = _parser().parse_args(argv)
    dataset: Dataset
    if args.tasks is None:
        dataset = LiveDataset(args.seed)
    else:
        # An hour younger than a day, so that a day's window keeps all N for an hour.
        generated = generate_tasks(
            args.tasks,
            args.urls_per_task,
            now=int(time.time()),
            seed=args.seed,
            lookback=DAY_SECONDS - 3600,
        )
        dataset = StaticDataset({("", False): generated})
    faults = Faults()
    if args.delay > 0:
        faults.delay(args.delay)
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    host, port = args.listen
    with SimulatedApi(
        DEMO_PUBLIC_KEY, DEMO_PRIVATE_KEY, dataset, faults=faults, host=host, port=port
    ) as api:
        print(api.url, flush=True)
        stopping.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
