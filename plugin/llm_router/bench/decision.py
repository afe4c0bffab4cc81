"""Decision time in process: parse + classify + decide for ~1 KB chat bodies, per classifier."""
from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time

import orjson

from llm_router.bench import without_memo
from llm_router.commands.common import at_least
from llm_router.config import load_config, parse_config
from llm_router.decision import Decision
from llm_router.router import Router

# Written for this benchmark: realistic prompts of roughly 1 KB once wrapped in a chat body.
PROMPTS = [
    "I run a small online bakery and want to send a friendly email to customers announcing that we now deliver on "
    "Sundays. Keep it warm and short, mention that orders must be placed by Saturday 6pm, that delivery is free above "
    "$30, and that our seasonal pumpkin loaf is back. Sign it from Maria and the team. Please also suggest two subject "
    "lines, one playful and one plain, and keep the whole email under 150 words so it reads well on a phone screen. "
    "Avoid exclamation marks in every sentence; one or two is fine. Our brand voice is relaxed and neighbourly, we "
    "never use corporate phrases like 'we are pleased to announce', and we like to thank customers for supporting a "
    "local business. If you mention the pumpkin loaf, say it is baked with real roasted pumpkin and a little cinnamon, "
    "and that it sold out within a day last autumn.",
    "Here is a Python function that is supposed to merge overlapping intervals but it returns wrong results for some "
    "inputs:\n\ndef merge(intervals):\n    intervals.sort()\n    out = []\n    for s, e in intervals:\n        if out and s < "
    "out[-1][1]:\n            out[-1][1] = e\n        else:\n            out.append([s, e])\n    return out\n\nFind the bug, "
    "explain why it happens for touching intervals like [1,2] and [2,3] and for nested ones like [1,10] and [2,3], fix "
    "it, and add three unit tests with pytest that would have caught it. Also say whether sorting in place is a "
    "problem for callers that reuse the list afterwards, and what the time complexity of the fixed version is. Keep "
    "the fix minimal and in the same style; we run Python 3.11 and use type hints everywhere else in the module, so "
    "show the signature with hints as well.",
    "We are choosing between PostgreSQL logical replication and a change-data-capture pipeline with Debezium and Kafka "
    "to feed an analytics warehouse from a 4 TB OLTP database that takes about 3,000 writes per second at peak. The team "
    "is five engineers, we run on Kubernetes, and the warehouse must be at most five minutes behind. Compare the two "
    "designs step by step: operational burden, failure modes during schema changes, backfills, ordering guarantees, "
    "cost, and what happens during a regional outage. Recommend one and justify the trade-offs. We already run a "
    "managed Kafka cluster for event sourcing in two other services, but nobody on the team has operated Debezium, "
    "and our DBA is worried about replication slots filling the disk if a consumer stalls over a weekend. Please "
    "also outline how you would monitor lag in either design.",
    "Extract every person, organisation and date from the following text and return them as JSON with the keys people, "
    "organisations and dates, each a list of strings in order of appearance: On 3 March 2024 the board of Norcastle "
    "Shipping met with representatives of the Harbour Authority and with Dr. Amina Okafor, who chairs the port safety "
    "review. The meeting agreed that Lars Pettersen would lead a joint working group with Tideway Logistics, reporting "
    "by 30 June 2024. A follow-up session with the city council is planned for early September. In a separate note, "
    "Greta Lindqvist of the Maritime Insurance Board asked on 12 March 2024 to receive the group's draft findings, and "
    "the union representative, Samuel Achterberg, requested that dock workers be consulted before 15 May 2024. Do not "
    "include job titles in the names, and keep duplicates out of the lists.",
]


def bodies() -> list[bytes]:
    """Chat bodies of roughly 1 KB each."""
    return [orjson.dumps({"model": "auto", "messages": [
        {"role": "system", "content": "You are a helpful assistant for a small company. Answer clearly."},
        {"role": "user", "content": p}], "temperature": 0.3}) for p in PROMPTS]


def agent_loops(calls: int = 8) -> list[list[tuple[str, bytes]]]:
    """The demo's coding-agent calls, each replayed as a loop of `calls` calls while the agent works on one
    instruction: the same instruction every time, one more tool call and its result each call."""
    from llm_router.commands.demo import load_workload, request_for

    loops = []
    for item in load_workload(None):
        if not item.get("agent"):
            continue
        path, body = request_for({**item, "tool_call": None})
        data = orjson.loads(body)
        loop = []
        for j in range(calls):
            loop.append((path, orjson.dumps(data)))
            result = f"step {j}: " + "ok tests/test_module_%d.py passed in 0.%02ds\n" % (j, j) * 6
            if "messages" in path:
                data["messages"] += [
                    {"role": "assistant", "content": [{"type": "tool_use", "id": f"toolu_{j}", "name": "run_command",
                                                       "input": {"command": f"pytest -q -k step{j}"}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{j}", "content": result}]}]
            else:
                data["messages"] += [
                    {"role": "assistant", "content": None, "tool_calls": [{"id": f"call_{j}", "type": "function", "function": {
                        "name": "run_command", "arguments": orjson.dumps({"command": f"pytest -q -k step{j}"}).decode()}}]},
                    {"role": "tool", "tool_call_id": f"call_{j}", "content": result}]
        loops.append(loop)
    return loops


def measure_loops(data: dict, loops: list[list[tuple[str, bytes]]], rounds: int, warm: list[bytes]) -> dict:
    """Per-call time over `rounds` replays of the agent loops, each round with a fresh router (an empty memo)."""
    times: list[int] = []
    hits = 0
    clock = time.perf_counter_ns
    for _ in range(rounds):
        router = Router(parse_config(data))
        for b in warm:  # other prompts: warms the code, not the memo for these loops
            router.route(b)
        for loop in loops:
            for path, body in loop:
                t0 = clock()
                _, d = router.route(body, path=path)
                times.append(clock() - t0)
                if not isinstance(d, Decision):
                    raise SystemExit(f"agent loop call was refused: {d}")
        semantic = getattr(router.default.classifier, "semantic", router.default.classifier)
        hits += getattr(semantic, "memo_hits", 0)
    times.sort()
    return {"p50_us": round(times[len(times) // 2] / 1000, 1), "p99_us": round(times[int(len(times) * 0.99)] / 1000, 1),
            "mean_us": round(statistics.fmean(times) / 1000, 1), "n": len(times), "memo_hits": hits}


def measure(router: Router, payloads: list[bytes], n: int) -> dict:
    """p50/p99/mean microseconds of router.route over n calls cycling the payloads."""
    for b in payloads * 50:  # warm-up
        router.route(b)
    times = []
    clock = time.perf_counter_ns
    for i in range(n):
        b = payloads[i % len(payloads)]
        t0 = clock()
        _, d = router.route(b)
        times.append(clock() - t0)
        if not isinstance(d, Decision):
            raise SystemExit(f"benchmark body was refused: {d}")
    times.sort()
    return {"p50_us": round(times[len(times) // 2] / 1000, 1), "p99_us": round(times[int(len(times) * 0.99)] / 1000, 1),
            "mean_us": round(statistics.fmean(times) / 1000, 1), "n": n}


def register(sub) -> None:
    p = sub.add_parser("decision", help="in-process decision time per classifier (parse + classify + decide)")
    p.add_argument("--requests", "-n", type=at_least(1), default=20000)
    p.add_argument("--classifiers", default="rules,semantic,hybrid", help="comma list: rules, semantic, hybrid, learned, none")
    p.add_argument("--learned-model", help="model file for the learned classifier (from `llm-router train`)")
    p.add_argument("--loop-rounds", type=at_least(0), default=10,
                   help="replays of the agent loops (memo off, then on) for classifiers with a semantic part (0: skip)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    payloads = bodies()
    sizes = sorted(len(b) for b in payloads)
    out: dict = {"body_bytes": sizes, "results": {}}
    for name in [c.strip() for c in args.classifiers.split(",") if c.strip()]:
        data: dict = {"seed": 1, "policies": {"default": {"classifier": name, "strategy": "ladder" if name != "learned" else "quality_gate",
                                                         "ladder": dict(load_config().policies["default"].ladder)}}}
        if name == "learned":
            if not args.learned_model:
                print("skipping learned: give --learned-model FILE", file=sys.stderr)
                continue
            data["classifiers"] = {"learned": {"model": args.learned_model}}
        try:
            router = Router(parse_config(without_memo(data)))  # the bodies repeat: measured unremembered
        except Exception as exc:  # a classifier that is not installed/built yet
            out["results"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        gc.collect()
        out["results"][name] = measure(router, payloads, args.requests)
        if name in ("semantic", "hybrid") and args.loop_rounds > 0:
            loops = agent_loops()
            out.setdefault("agent_loop", {})[name] = {
                "loops": len(loops), "calls_per_loop": len(loops[0]),
                "memo_off": measure_loops(without_memo(data), loops, args.loop_rounds, payloads),
                "memo_on": measure_loops(data, loops, args.loop_rounds, payloads)}
    out["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.json:
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"bodies: {sizes} bytes; {args.requests} decisions per classifier; max RSS {out['max_rss_mb']} MB")
        print(f"{'classifier':12s} {'p50 us':>8s} {'p99 us':>8s} {'mean us':>8s}")
        for name, r in out["results"].items():
            if "error" in r:
                print(f"{name:12s} unavailable: {r['error']}")
            else:
                print(f"{name:12s} {r['p50_us']:8.1f} {r['p99_us']:8.1f} {r['mean_us']:8.1f}")
        for name, r in out.get("agent_loop", {}).items():
            off, on = r["memo_off"], r["memo_on"]
            print(f"agent loops, {name}: {r['loops']} loops of {r['calls_per_loop']} calls (same instruction, one more tool "
                  f"result each call), per call p50/p99/mean us: memo off {off['p50_us']}/{off['p99_us']}/{off['mean_us']}, "
                  f"memo on {on['p50_us']}/{on['p99_us']}/{on['mean_us']} ({on['memo_hits']} of {on['n']} calls remembered)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_router.bench.decision")
    sub = parser.add_subparsers(dest="target", required=True)
    register(sub)
    return run(parser.parse_args(["decision", *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
