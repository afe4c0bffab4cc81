"""Usage of streamed answers on APISIX: `POST /v1/usage-log` beside /metrics, from APISIX's http-logger.

ext-plugin-post-resp could hand a stream's body to the runner only by buffering all of it, so a stream passes it
unread. APISIX's http-logger with `include_resp_body` keeps a copy of the body as it streams by and, once the
exchange is over, posts its log entry (one JSON object, or an array of them when batched): the request's headers,
which carry the runner's x-llm-router-request-id, and the response body, the SSE text with its usage block.
"""
from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from llm_router.plan import REQUEST_ID_HEADER

PATH = "/v1/usage-log"
MAX_BODY_BYTES = 64 << 20  # a batch of long streams
# A shared key (runner's environment, and http-logger's auth_header through `apisix enable --stream-usage`): a client
# that reaches the listener must not post usage for its own streams (it knows their request ids) to dodge its budget.
KEY_ENV = "LLM_ROUTER_USAGE_LOG_KEY"


def key_from_env() -> str | None:
    """The usage log's key, when one is set."""
    return os.environ.get(KEY_ENV) or None


class UsageLogError(ValueError):
    """A post the listener refuses (status and an OpenAI-format body naming the problem)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status

    def body(self) -> bytes:
        return orjson.dumps({"error": {"message": str(self), "type": "invalid_request_error", "param": "body",
                                       "code": None}})


@dataclass(frozen=True, slots=True)
class StreamLog:
    """One logged exchange: the runner's request id and the response body as the client got it."""

    request_id: str
    body: bytes


def parse(raw: bytes) -> tuple[list[StreamLog], int]:
    """The entries that name a request id and carry a body, and how many entries were skipped."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UsageLogError(400, f"usage log is not JSON: {exc}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise UsageLogError(400, "usage log must be a log entry (object) or a batch of them (array)")
    out: list[StreamLog] = []
    skipped = 0
    for entry in data:
        got = _one(entry)
        if got is None:
            skipped += 1
        else:
            out.append(got)
    return out, skipped


def _one(entry: object) -> StreamLog | None:
    if not isinstance(entry, dict):
        return None
    request, response = entry.get("request"), entry.get("response")
    headers = request.get("headers") if isinstance(request, dict) else None
    rid = headers.get(REQUEST_ID_HEADER) if isinstance(headers, dict) else None
    if isinstance(rid, list):  # a repeated header: nginx lists its values
        rid = rid[0] if rid else None
    body = response.get("body") if isinstance(response, dict) else None
    if not isinstance(rid, str) or not isinstance(body, str):
        return None
    return StreamLog(rid, body.encode("utf-8", "surrogateescape"))


def handle(method: str, size: int, read: Callable[[int], bytes], take: Callable[[list[StreamLog]], None], *,
           authorization: str | None = None, key: str | None = None) -> tuple[int, bytes]:
    """One POST as the listener relays it: (status, JSON body); the parsed entries go to `take`.

    With a `key`, the post must carry `Authorization: Bearer <key>`."""
    try:
        if key and not hmac.compare_digest((authorization or "").encode(), f"Bearer {key}".encode()):
            raise UsageLogError(401, f"usage log needs the Authorization header http-logger sends (auth_header: "
                                     f"'Bearer ' + ${KEY_ENV})")
        if method != "POST":
            raise UsageLogError(405, "POST APISIX http-logger entries as JSON")
        if size < 0 or size > MAX_BODY_BYTES:
            raise UsageLogError(413, f"usage log needs a Content-Length of at most {MAX_BODY_BYTES} bytes")
        logs, skipped = parse(read(size))
    except UsageLogError as exc:
        return exc.status, exc.body()
    if logs:
        take(logs)
    return 200, orjson.dumps({"accepted": len(logs), "skipped": skipped})
