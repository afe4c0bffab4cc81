"""Feedback on answers, by request id: `POST /v1/feedback` beside /metrics, appended to `metrics.feedback_log`.

Clients get `x-llm-router-request-id` on every routed response; they (or a judge, or a task's
own success check) rate the answer with {"request_id": ..., "score": 0..1} or {..., "good": true}.
The lines join the decision log in `llm-router train`, which learns from your own traffic.
Only ids and numbers are stored: no free text, so nothing to redact.
"""
from __future__ import annotations

import re
import threading
import time
from typing import IO, Any

import orjson

from llm_router.datasets import DatasetError

MAX_BODY_BYTES = 1 << 20
MAX_BATCH = 1000
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class FeedbackError(ValueError):
    """A feedback body that cannot be taken: an HTTP status and a message naming the problem."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param

    def body(self) -> bytes:
        """The OpenAI error format."""
        return orjson.dumps({"error": {"message": self.message, "type": "invalid_request_error", "param": self.param,
                                       "code": "bad_feedback" if self.status == 400 else None}})


def parse(body: bytes) -> list[dict[str, Any]]:
    """Validated feedback lines from a JSON object or a list of them; raises FeedbackError naming the field."""
    from llm_router.learn.traffic import feedback_value

    if len(body) > MAX_BODY_BYTES:
        raise FeedbackError(413, f"feedback body of {len(body)} bytes exceeds the limit of {MAX_BODY_BYTES} bytes")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FeedbackError(400, f"feedback body is not valid JSON: {exc}") from None
    items = data if isinstance(data, list) else [data]
    if not items or len(items) > MAX_BATCH:
        raise FeedbackError(400, f"send 1 to {MAX_BATCH} feedback objects, got {len(items)}")
    out = []
    now = round(time.time(), 3)
    for n, item in enumerate(items):
        where = f"feedback[{n}]" if isinstance(data, list) else "feedback"
        if not isinstance(item, dict):
            raise FeedbackError(400, f"{where}: expected a JSON object, got {type(item).__name__}")
        rid = item.get("request_id")
        if not isinstance(rid, str) or not _REQUEST_ID.fullmatch(rid):
            raise FeedbackError(400, f"{where}: 'request_id' must be the x-llm-router-request-id of a response "
                                     "(1-128 letters, digits or ._:-)", "request_id")
        if "score" not in item and "good" not in item:
            raise FeedbackError(400, f"{where}: give 'score' (0 to 1) or 'good' (true or false)", "score")
        try:
            score = feedback_value(item, where)
        except DatasetError as exc:
            raise FeedbackError(400, str(exc), "score" if "score" in item else "good") from None
        out.append({"request_id": rid, "score": score, "ts": now})
    return out


class FeedbackLog:
    """Appends feedback lines to a file; written at once (low volume), from the HTTP server's threads."""

    def __init__(self, path: str):
        self.path = path
        self._out: IO[bytes] = open(path, "ab")
        self._lock = threading.Lock()

    def write(self, lines: list[dict[str, Any]]) -> None:
        data = b"".join(orjson.dumps(x) + b"\n" for x in lines)
        with self._lock:
            self._out.write(data)
            self._out.flush()

    def close(self) -> None:
        with self._lock:
            self._out.close()
