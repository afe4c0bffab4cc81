"""A trivial ext-plugin runner written the obvious way, for `bench nginx`: the kind of runner the issue's baseline measured.

asyncio streams on the stdlib event loop, the generated flatbuffers code and a fresh Builder for every reply, the
stdlib json module. Per call: answer PrepareConf with a token, ask for the body, set a fixed model and reply Rewrite
with the new body and a routing header. No classification.

Run: python -m llm_router.bench.apisix_trivial --socket PATH (SIGTERM stops it).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal

import flatbuffers

from llm_router.gateways.apisix.proto.A6 import TextEntry
from llm_router.gateways.apisix.proto.A6.ExtraInfo import Info, ReqBody
from llm_router.gateways.apisix.proto.A6.ExtraInfo import Req as InfoReq
from llm_router.gateways.apisix.proto.A6.ExtraInfo import Resp as InfoResp
from llm_router.gateways.apisix.proto.A6.HTTPReqCall import Action, Rewrite
from llm_router.gateways.apisix.proto.A6.HTTPReqCall import Req as CallReq
from llm_router.gateways.apisix.proto.A6.HTTPReqCall import Resp as CallResp
from llm_router.gateways.apisix.proto.A6.PrepareConf import Resp as ConfResp

MODEL = "deepseek-chat"
UPSTREAM = "deepseek"


def _frame(rpc_type: int, payload: bytes) -> bytes:
    return bytes([rpc_type]) + len(payload).to_bytes(3, "big") + payload


def _prepare_conf_resp(token: int) -> bytes:
    b = flatbuffers.Builder(64)
    ConfResp.Start(b)
    ConfResp.AddConfToken(b, token)
    b.Finish(ConfResp.End(b))
    return _frame(1, bytes(b.Output()))


def _ask_body() -> bytes:
    b = flatbuffers.Builder(64)
    ReqBody.Start(b)
    body = ReqBody.End(b)
    InfoReq.Start(b)
    InfoReq.AddInfoType(b, Info.Info.ReqBody)
    InfoReq.AddInfo(b, body)
    b.Finish(InfoReq.End(b))
    return _frame(3, bytes(b.Output()))


def _rewrite(rid: int, body: bytes) -> bytes:
    b = flatbuffers.Builder(len(body) + 256)
    entries = []
    for name, value in (("x-llm-router-upstream", UPSTREAM), ("authorization", "Bearer trivial-runner-key")):
        n, v = b.CreateString(name), b.CreateString(value)
        TextEntry.Start(b)
        TextEntry.AddName(b, n)
        TextEntry.AddValue(b, v)
        entries.append(TextEntry.End(b))
    Rewrite.StartHeadersVector(b, len(entries))
    for e in reversed(entries):
        b.PrependUOffsetTRelative(e)
    headers = b.EndVector()
    new_body = b.CreateByteVector(body)
    Rewrite.Start(b)
    Rewrite.AddHeaders(b, headers)
    Rewrite.AddBody(b, new_body)
    action = Rewrite.End(b)
    CallResp.Start(b)
    CallResp.AddId(b, rid)
    CallResp.AddActionType(b, Action.Action.Rewrite)
    CallResp.AddAction(b, action)
    b.Finish(CallResp.End(b))
    return _frame(2, bytes(b.Output()))


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(4)
    return head[0], await reader.readexactly(int.from_bytes(head[1:], "big"))


async def _connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            rpc_type, payload = await _read_frame(reader)
            if rpc_type == 1:
                writer.write(_prepare_conf_resp(1))
            elif rpc_type == 2:
                rid = CallReq.Req.GetRootAs(payload, 0).Id()
                writer.write(_ask_body())
                await writer.drain()
                _, answer = await _read_frame(reader)
                data = json.loads(InfoResp.Resp.GetRootAs(answer, 0).ResultAsNumpy().tobytes())
                data["model"] = MODEL
                writer.write(_rewrite(rid, json.dumps(data).encode()))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(path: str) -> None:
    """Serve on `path` until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    old = os.umask(0o111)
    try:
        server = await asyncio.start_unix_server(_connection, path=path)
    finally:
        os.umask(old)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    asyncio.run(serve(parser.parse_args().socket))


if __name__ == "__main__":
    main()
