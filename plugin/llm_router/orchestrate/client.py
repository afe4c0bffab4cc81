"""One pooled httpx.AsyncClient (HTTP/2 where TLS offers it) for the runner's own upstream calls."""
from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field

import httpx

from llm_router.orchestrate.settings import OrchestrateSettings, tls_context
from llm_router.plan import UpstreamCall


@dataclass(slots=True)
class Response:
    """What came back from one call: status 0 means no response (connect error, timeout, reset)."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    latency_s: float = 0.0
    error: str = ""  # why there was no usable response (never contains header values)


class UpstreamClient:
    """Sends UpstreamCalls to the provider (or the gateway's egress route) and reads whole answers."""

    def __init__(self, settings: OrchestrateSettings, *, route_header: str, transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        self.route_header = route_header
        http2 = settings.http2
        if http2:
            try:
                import h2  # noqa: F401
            except ImportError:  # pragma: no cover - h2 is a dependency
                http2 = False
        verify: bool | ssl.SSLContext = settings.verify_tls
        if verify and settings.ca_bundle:
            verify = tls_context(settings.ca_bundle, "server.orchestrate.ca_bundle")
        self._client = httpx.AsyncClient(
            http2=http2, verify=verify, trust_env=False, follow_redirects=False, transport=transport,
            timeout=httpx.Timeout(connect=settings.connect_timeout_s, read=settings.read_timeout_s,
                                  write=settings.read_timeout_s, pool=settings.connect_timeout_s),
            limits=httpx.Limits(max_connections=settings.max_connections, max_keepalive_connections=settings.max_keepalive),
        )

    def url_and_headers(self, call: UpstreamCall, request_id: str) -> tuple[str, list[tuple[str, str]]]:
        """Where to send a call and with which headers (egress keeps the route header; direct drops it)."""
        egress = self.settings.egress
        headers = [("content-type", "application/json"), ("accept", "application/json"),
                   ("x-llm-router-request-id", request_id)]
        for name, value in call.set_headers:
            if name == self.route_header and not egress:
                continue
            headers.append((name, value))
        base = egress if egress else call.provider.base_url
        return base + call.path, headers

    async def send(self, call: UpstreamCall, *, timeout_s: float, request_id: str) -> Response:
        """POST the call's body; the whole answer within timeout_s, bounded in size; never raises but on cancel."""
        url, headers = self.url_and_headers(call, request_id)
        t0 = time.monotonic()
        limit = self.settings.max_response_bytes
        try:
            async with asyncio.timeout(timeout_s):
                async with self._client.stream("POST", url, content=call.body, headers=headers) as resp:
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in resp.aiter_bytes():
                        size += len(chunk)
                        if size > limit:
                            return Response(0, [], b"", time.monotonic() - t0, f"answer larger than {limit} bytes")
                        chunks.append(chunk)
                    out_headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in resp.headers.raw]
                    return Response(resp.status_code, out_headers, b"".join(chunks), time.monotonic() - t0)
        except TimeoutError:
            return Response(0, [], b"", time.monotonic() - t0, f"timeout after {timeout_s:g}s")
        except httpx.HTTPError as exc:
            return Response(0, [], b"", time.monotonic() - t0, f"{type(exc).__name__}: {_safe(str(exc))}")
        except OSError as exc:
            return Response(0, [], b"", time.monotonic() - t0, f"{type(exc).__name__}: {exc.strerror or ''}")

    async def aclose(self) -> None:
        await self._client.aclose()


def _safe(text: str) -> str:
    """Transport error text, short (httpx messages hold hosts and reasons, never our headers)."""
    return text.replace("\n", " ")[:160]
