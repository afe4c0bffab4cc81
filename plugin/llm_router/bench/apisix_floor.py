"""The floor for `bench apisix --compare-floor`: the least an ext-plugin runner can do per routed call.

It speaks the same protocol as the real runner on the same socket work (uvloop, asyncio.Protocol,
the same framing and flatbuffers code): answers PrepareConf with a token, asks for the body on each
HTTPReqCall, then parses the JSON body, sets a fixed model and replies Rewrite with the new body and
a routing header. No classification, no decision, no keys, no metrics. What it burns per request
is what this machine charges for the transport and a JSON rewrite; the real runner's CPU minus
this is what routing costs.

Run: python -m llm_router.bench.apisix_floor --socket PATH (SIGTERM stops it).
"""
from __future__ import annotations

import argparse
import asyncio
import signal

import orjson

from llm_router.gateways.apisix import decode, encode, framing
from llm_router.gateways.apisix.server import bind_socket
from llm_router.loop_thread import new_loop

MODEL = "deepseek-chat"


class FloorProtocol(asyncio.Protocol):
    """One connection: ReqCall -> ask for the body -> Rewrite with the model set."""

    __slots__ = ("transport", "reader", "rid", "headers")

    def __init__(self, headers: bytes):
        self.transport: asyncio.Transport | None = None
        self.reader = framing.FrameReader()
        self.rid = -1
        self.headers = headers

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for rpc_type, payload in self.reader.feed(data):
            self.transport.write(self._reply(rpc_type, payload))

    def _reply(self, rpc_type: int, payload: bytes) -> bytes:
        if rpc_type == framing.RPC_HTTP_REQ_CALL:
            self.rid = decode.read_req_call(payload).id
            return encode.REQ_BODY_FRAME
        if rpc_type == framing.RPC_EXTRA_INFO:
            data = orjson.loads(decode.read_extra_info_result(payload) or b"{}")
            data["model"] = MODEL
            return encode.rewrite_frame(self.rid, headers=self.headers, body=orjson.dumps(data))
        if rpc_type == framing.RPC_PREPARE_CONF:
            return encode.prepare_conf_frame(1)
        return encode.error_frame(encode.BAD_REQUEST)


async def serve(path: str) -> None:
    """Serve on `path` until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    headers = encode.EntryCache().vector((("x-llm-router-model", MODEL), ("authorization", None)))
    server = await loop.create_unix_server(lambda: FloorProtocol(headers), sock=bind_socket(path))
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    args = parser.parse_args()
    loop = new_loop()
    try:
        loop.run_until_complete(serve(args.socket))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
