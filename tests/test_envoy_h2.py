"""The lean HTTP/2 gRPC transport against an independent HTTP/2 implementation (the `h2` library).

h2 enforces the protocol on what it receives (frame sizes, flow-control windows, HPACK, stream
states), so these tests fail if the server breaks HTTP/2, not only if a reply is wrong.
"""
from __future__ import annotations

import asyncio
import socket
import struct

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from llm_router.gateways.envoy.h2grpc import PROCESS_PATH, H2GrpcServer

GRPC_HEADERS = [(":method", "POST"), (":scheme", "http"), (":path", PROCESS_PATH.decode()), (":authority", "ext_proc"),
                ("content-type", "application/grpc"), ("te", "trailers")]


def grpc_frame(msg: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def grpc_messages(data: bytes) -> list[bytes]:
    out = []
    while data:
        n = struct.unpack(">I", data[1:5])[0]
        out.append(data[5:5 + n])
        data = data[5 + n:]
    return out


class EchoSession:
    """Echoes each message; 'finish' ends the stream OK; 'boom' raises; 'big:N' replies N bytes."""

    closed: list["EchoSession"] = []

    def __init__(self, metadata: dict[str, str]):
        self.metadata = metadata
        self.finished = False
        self.messages: list[bytes] = []

    def on_message(self, data: bytes) -> list[bytes]:
        self.messages.append(data)
        if data == b"boom":
            raise RuntimeError("session bug")
        if data.startswith(b"big:"):
            return [b"x" * int(data[4:])]
        if data == b"finish":
            self.finished = True
            return [b"bye"]
        if data == b"silent":
            return []
        return [b"echo:" + data]

    def on_close(self) -> None:
        EchoSession.closed.append(self)


class Client:
    """An h2 client connection over a Unix socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, settings: dict | None = None):
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.events: list[h2.events.Event] = []
        self.data: dict[int, bytes] = {}
        self.auto_ack = True

    @classmethod
    async def connect(cls, path: str, settings: dict | None = None) -> "Client":
        reader, writer = await asyncio.open_unix_connection(path)
        c = cls(reader, writer, settings)
        await c.flush()
        # The server's SETTINGS and connection WINDOW_UPDATE open the windows for what we send.
        await c.pump(lambda c: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in c.events)
                     and any(isinstance(e, h2.events.WindowUpdated) and e.stream_id == 0 for e in c.events))
        return c

    async def flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.writer.write(out)
            await self.writer.drain()

    async def pump(self, until, timeout: float = 10.0) -> None:
        """Read and handle frames until until(self) is true."""
        async def loop():
            while not until(self):
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                for ev in self.conn.receive_data(chunk):
                    self.events.append(ev)
                    if isinstance(ev, h2.events.DataReceived):
                        self.data[ev.stream_id] = self.data.get(ev.stream_id, b"") + ev.data
                        if self.auto_ack:
                            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                await self.flush()
        await asyncio.wait_for(loop(), timeout)

    def ended(self, sid: int) -> bool:
        return any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == sid for e in self.events)

    def trailers(self, sid: int) -> dict[str, str]:
        for e in self.events:
            if isinstance(e, h2.events.TrailersReceived) and e.stream_id == sid:
                return dict(e.headers)
            if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid and any(k == "grpc-status" for k, _ in e.headers):
                return dict(e.headers)
        return {}

    async def call(self, messages: list[bytes], *, end: bool = True, headers=GRPC_HEADERS) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, headers)
        for m in messages:
            self.conn.send_data(sid, grpc_frame(m))
        if end:
            self.conn.end_stream(sid)
        await self.flush()
        return sid

    def close(self) -> None:
        self.writer.close()


def serve(tmp_path, test, session=EchoSession):
    """Run an async test against a fresh server on a Unix socket."""
    path = str(tmp_path / "h2.sock")

    async def main():
        server = H2GrpcServer(session)
        await server.start(f"unix:{path}")
        try:
            await test(path, server)
        finally:
            await server.stop(2.0)

    EchoSession.closed.clear()
    asyncio.run(main())


def test_messages_are_answered_in_order_and_the_stream_ends_ok(tmp_path):
    async def t(path, server):
        c = await Client.connect(path)
        sid = await c.call([b"one", b"two", b"three"])
        await c.pump(lambda c: c.ended(sid))
        assert grpc_messages(c.data[sid]) == [b"echo:one", b"echo:two", b"echo:three"]
        assert c.trailers(sid)["grpc-status"] == "0"
        response = next(e for e in c.events if isinstance(e, h2.events.ResponseReceived))
        assert dict(response.headers) == {":status": "200", "content-type": "application/grpc"}
        c.close()
    serve(tmp_path, t)
    assert [s.messages for s in EchoSession.closed] == [[b"one", b"two", b"three"]]


def test_a_finished_session_ends_the_stream_before_the_client_does(tmp_path):
    async def t(path, server):
        c = await Client.connect(path)
        sid = await c.call([b"hello", b"finish"], end=False)
        await c.pump(lambda c: c.ended(sid))
        assert grpc_messages(c.data[sid]) == [b"echo:hello", b"bye"]
        assert c.trailers(sid)["grpc-status"] == "0"
        c.close()
    serve(tmp_path, t)


def test_unknown_method_gets_unimplemented(tmp_path):
    async def t(path, server):
        c = await Client.connect(path)
        headers = [(k, "/other.Service/Method" if k == ":path" else v) for k, v in GRPC_HEADERS]
        sid = await c.call([b"x"], headers=headers)
        await c.pump(lambda c: c.ended(sid))
        tr = c.trailers(sid)
        assert tr["grpc-status"] == "12" and "unknown method" in tr["grpc-message"]
        sid2 = await c.call([b"still works"])  # the connection stays usable
        await c.pump(lambda c: c.ended(sid2))
        assert grpc_messages(c.data[sid2]) == [b"echo:still works"]
        c.close()
    serve(tmp_path, t)


def test_a_failing_session_gives_internal_and_other_streams_continue(tmp_path):
    async def t(path, server):
        c = await Client.connect(path)
        bad = await c.call([b"boom"], end=False)
        good = await c.call([b"fine"])
        await c.pump(lambda c: c.ended(bad) and c.ended(good))
        assert c.trailers(bad)["grpc-status"] == "13"
        assert grpc_messages(c.data[good]) == [b"echo:fine"]
        c.close()
    serve(tmp_path, t)


def test_replies_respect_the_peer_window_and_frame_size(tmp_path):
    async def t(path, server):
        c = await Client.connect(path, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
        await c.pump(lambda c: any(isinstance(e, h2.events.SettingsAcknowledged) for e in c.events))
        c.auto_ack = False
        sid = await c.call([b"big:200000"], end=False)
        # Without WINDOW_UPDATE the server may send only 1000 bytes on the stream (h2 would raise otherwise).
        await c.pump(lambda c: len(c.data.get(sid, b"")) >= 1000)
        await asyncio.sleep(0)  # nothing more can come; give the server a turn to prove it
        assert len(c.data[sid]) == 1000
        c.auto_ack = True
        c.conn.increment_flow_control_window(300_000, stream_id=sid)
        c.conn.increment_flow_control_window(300_000)
        await c.flush()
        c.conn.end_stream(sid)
        await c.flush()
        await c.pump(lambda c: c.ended(sid))
        assert grpc_messages(c.data[sid]) == [b"x" * 200000]  # split into frames <= 16384 (h2 checks)
        assert c.trailers(sid)["grpc-status"] == "0"
        c.close()
    serve(tmp_path, t)


def test_large_messages_across_frames_padding_and_continuation(tmp_path):
    async def t(path, server):
        c = await Client.connect(path)
        sid = c.conn.get_next_available_stream_id()
        big_meta = [("x-big", "v" * 40000)]  # header block larger than a frame: HEADERS + CONTINUATION
        c.conn.send_headers(sid, GRPC_HEADERS + big_meta)
        payload = grpc_frame(b"m" * 100_000)
        for i in range(0, len(payload), 7000):
            c.conn.send_data(sid, payload[i:i + 7000], pad_length=9)
        c.conn.end_stream(sid)
        await c.flush()
        await c.pump(lambda c: c.ended(sid))
        assert grpc_messages(c.data[sid]) == [b"echo:" + b"m" * 100_000]
        c.close()
    serve(tmp_path, t)
    assert EchoSession.closed[0].metadata["x-big"] == "v" * 40000


def test_many_interleaved_streams_and_a_dynamic_hpack_table(tmp_path):
    async def t(path, server):
        c = await Client.connect(path)
        sids = []
        for i in range(60):
            # A varying header makes the client's encoder index new entries in its dynamic table.
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, GRPC_HEADERS + [("x-n", str(i % 7)), ("x-route", f"r{i}")])
            sids.append(sid)
        for i, sid in enumerate(sids):
            c.conn.send_data(sid, grpc_frame(f"m{i}".encode()), end_stream=True)
        await c.flush()
        await c.pump(lambda c: all(c.ended(s) for s in sids))
        for i, sid in enumerate(sids):
            assert grpc_messages(c.data[sid]) == [f"echo:m{i}".encode()]
        c.close()
    serve(tmp_path, t)
    routes = sorted(int(s.metadata["x-route"][1:]) for s in EchoSession.closed)
    assert routes == list(range(60))


def test_ping_is_acknowledged(tmp_path):
    async def t(path, server):
        c = await Client.connect(path)
        c.conn.ping(b"8 bytes!")
        await c.flush()
        await c.pump(lambda c: any(isinstance(e, h2.events.PingAckReceived) for e in c.events))
        ack = next(e for e in c.events if isinstance(e, h2.events.PingAckReceived))
        assert ack.ping_data == b"8 bytes!"
        c.close()
    serve(tmp_path, t)


def test_reset_from_the_client_closes_the_session(tmp_path):
    async def t(path, server):
        c = await Client.connect(path)
        sid = await c.call([b"silent"], end=False)
        other = await c.call([b"after"])
        await c.pump(lambda c: c.ended(other))
        c.conn.reset_stream(sid, error_code=8)
        await c.flush()
        probe = await c.call([b"probe"])
        await c.pump(lambda c: c.ended(probe))
        c.close()
    serve(tmp_path, t)
    assert [b"silent"] in [s.messages for s in EchoSession.closed]


def test_graceful_stop_sends_goaway_and_lets_a_stream_finish(tmp_path):
    async def t(path, server):
        c = await Client.connect(path)
        sid = await c.call([b"first"], end=False)
        await c.pump(lambda c: sid in c.data)  # the server has the stream open
        stopping = asyncio.create_task(server.stop(5.0))
        await c.pump(lambda c: any(isinstance(e, h2.events.ConnectionTerminated) for e in c.events))
        goaway = next(e for e in c.events if isinstance(e, h2.events.ConnectionTerminated))
        assert goaway.error_code == 0 and goaway.last_stream_id == sid
        # h2 stops sending after a GOAWAY, though RFC 9113 lets streams <= last_stream_id finish: write by hand.
        payload = grpc_frame(b"late")
        c.writer.write(len(payload).to_bytes(3, "big") + bytes([0, 1]) + sid.to_bytes(4, "big") + payload)
        await c.writer.drain()
        raw = b""
        while True:
            chunk = await asyncio.wait_for(c.reader.read(65536), 5)
            if not chunk:
                break
            raw += chunk
        frames = []
        while len(raw) >= 9:
            n = int.from_bytes(raw[:3], "big")
            frames.append((raw[3], raw[4], int.from_bytes(raw[5:9], "big"), raw[9:9 + n]))
            raw = raw[9 + n:]
        data = [p for t_, f, s, p in frames if t_ == 0 and s == sid]
        assert grpc_messages(c.data[sid] + b"".join(data)) == [b"echo:first", b"echo:late"]
        assert any(t_ == 1 and f & 1 and s == sid for t_, f, s, p in frames)  # trailers end the stream
        await stopping  # then the server closed the connection
        c.close()
    serve(tmp_path, t)


def test_a_bad_preface_is_refused_with_goaway(tmp_path):
    async def t(path, server):
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        await writer.drain()
        data = b""
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            data += chunk
        frames = []
        while len(data) >= 9:
            n = int.from_bytes(data[:3], "big")
            frames.append(data[3])
            data = data[9 + n:]
        assert 7 in frames  # GOAWAY, then the connection is closed
        writer.close()
    serve(tmp_path, t)


def test_tcp_listener(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main():
        server = H2GrpcServer(EchoSession)
        await server.start(f"127.0.0.1:{port}")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            c = Client(reader, writer)
            await c.flush()
            sid = await c.call([b"tcp"])
            await c.pump(lambda c: c.ended(sid))
            assert grpc_messages(c.data[sid]) == [b"echo:tcp"]
            c.close()
        finally:
            await server.stop(2.0)

    asyncio.run(main())


@pytest.mark.parametrize("garbage", [b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00",  # WINDOW_UPDATE increment 0
                                     b"\x00\x00\x00\x00\x00\x00\x00\x00\x00"])  # DATA on stream 0
def test_protocol_errors_close_the_connection_not_the_server(tmp_path, garbage):
    async def t(path, server):
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" + garbage)
        await writer.drain()
        while await asyncio.wait_for(reader.read(65536), 5):
            pass
        writer.close()
        c = await Client.connect(path)  # the server still serves new connections
        sid = await c.call([b"ok"])
        await c.pump(lambda c: c.ended(sid))
        assert grpc_messages(c.data[sid]) == [b"echo:ok"]
        c.close()
    serve(tmp_path, t)
