"""`bench apisix --steps`: where one connection's call spends its time, from timestamps on the runner's own steps.

Runs `llm-router serve` with three methods of the APISIX server wrapped (reading a connection, handling
its frames, writing the turn's replies); at exit it writes the median of each step of the sequential calls
it saw to the file given by --steps-out. A call is: the HTTPReqCall arrives, the body request is written,
the body comes, it is routed, the Rewrite is written, and the next HTTPReqCall arrives. Reading the call
(decoding it, finding its route) happens before the body request, or while the body is awaited when the body
was asked for early.

Run: python -m llm_router.bench.apisix_steps --steps-out FILE serve --apisix --socket PATH ...
"""
from __future__ import annotations

import atexit
import collections
import json
import statistics
import sys
import time
from collections.abc import Iterable

STEPS = ("request_to_body_request_us", "waiting_for_body_us", "routing_body_us", "writing_rewrite_us",
         "rewrite_to_next_request_us", "reading_the_call_us")  # the last is inside the first or, asked early, the second
_KEEP = 400_000  # marks kept (the newest), about 50,000 calls


def instrument(out_path: str) -> None:
    """Wrap the server's read, frame handling and flush with timestamps; write the step medians at exit."""
    from llm_router.gateways.apisix import server

    clock = time.perf_counter_ns
    marks: collections.deque[tuple[str, int]] = collections.deque(maxlen=_KEEP)
    received, handle, flush = server.RunnerProtocol.data_received, server.RunnerProtocol._handle, server.Activity.flush

    def timed_received(self, data: bytes) -> None:
        marks.append(("in", clock()))
        received(self, data)

    def timed_handle(self, data: bytes) -> None:
        marks.append(("h0", clock()))
        handle(self, data)
        marks.append(("h1", clock()))

    def timed_flush(self) -> None:
        queued = len(self.outbox)
        flush(self)
        if queued:
            marks.append(("out", clock()))

    server.RunnerProtocol.data_received = timed_received  # type: ignore[method-assign]
    server.RunnerProtocol._handle = timed_handle  # type: ignore[method-assign]
    server.Activity.flush = timed_flush  # type: ignore[method-assign]

    def write() -> None:
        with open(out_path, "w") as f:
            json.dump(steps(marks), f)

    atexit.register(write)


def steps(marks: Iterable[tuple[str, int]]) -> dict[str, float | int]:
    """Median microseconds of each step over the calls found in the marks (and how many calls that was).

    A call's marks: in h0 h1 out (the HTTPReqCall read, then the body request written), or in out h0 h1 when the
    body was asked for before the call was read (server.apisix_early_body); then the body: h0 h1 out when the
    runner caught it while polling, in h0 h1 out when the event loop woke it for it.
    """
    seq = list(marks)
    # per call: request in, call read from, call read to, body request out, body h0, body h1, rewrite out
    calls: list[tuple[int, int, int, int, int, int, int]] = []
    i = 0
    while i + 7 <= len(seq):
        kinds = [k for k, _ in seq[i:i + 8]]
        early = kinds[:4] == ["in", "out", "h0", "h1"]
        if kinds[:4] == ["in", "h0", "h1", "out"] or early:
            j = i + 4 + (kinds[4:5] == ["in"])
            if [k for k, _ in seq[j:j + 3]] == ["h0", "h1", "out"]:
                if early:
                    asked, read0, read1 = seq[i + 1][1], seq[i + 2][1], seq[i + 3][1]
                else:
                    read0, read1, asked = seq[i + 1][1], seq[i + 2][1], seq[i + 3][1]
                calls.append((seq[i][1], read0, read1, asked, seq[j][1], seq[j + 1][1], seq[j + 2][1]))
                i = j + 3
                continue
        i += 1
    if len(calls) < 2:
        return {"calls": len(calls)}
    parts: list[list[int]] = [[] for _ in STEPS]
    for (start, read0, read1, asked, body, routed, out), nxt in zip(calls, calls[1:]):
        for part, ns in zip(parts, (asked - start, body - asked, routed - body, out - routed, nxt[0] - out, read1 - read0)):
            part.append(ns)
    result: dict[str, float | int] = {name: round(statistics.median(p) / 1000, 1) for name, p in zip(STEPS, parts)}
    result["calls"] = len(calls)
    return result


def main() -> None:
    args = sys.argv[1:]
    if len(args) < 2 or args[0] != "--steps-out":
        raise SystemExit("usage: python -m llm_router.bench.apisix_steps --steps-out FILE serve --apisix ...")
    instrument(args[1])
    from llm_router.cli import main as cli_main

    sys.exit(cli_main(args[2:]))


if __name__ == "__main__":
    main()
