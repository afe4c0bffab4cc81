"""Usage from provider answers in each dialect, prompt-cache tokens included, and what it costs."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import orjson
import pytest

from llm_router.accounting import SSEUsage, Usage, usage_from_json
from llm_router.config import load_config, parse_config
from llm_router.metrics import scrape_totals
from llm_router.router import build_catalog


def test_openai_counts_cached_tokens_inside_prompt_tokens():
    body = orjson.dumps({"usage": {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
                                   "prompt_tokens_details": {"cached_tokens": 768, "audio_tokens": 0}}})
    assert usage_from_json(body) == Usage(1000, 50, 768, 0)
    plain = orjson.dumps({"usage": {"prompt_tokens": 10, "completion_tokens": 5}})  # older answers: no details
    assert usage_from_json(plain) == Usage(10, 5, 0, 0)


def test_openai_counts_cache_writes_inside_the_input_on_both_apis():
    """GPT-5.6 and later report writes as cache_write_tokens (chat: prompt_tokens_details; Responses: input_tokens_details),
    a part of the input billed at the cache-write price in place of the input price."""
    chat = orjson.dumps({"usage": {"prompt_tokens": 9657, "completion_tokens": 78, "total_tokens": 9735,
                                   "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 9654, "audio_tokens": 0},
                                   "completion_tokens_details": {"reasoning_tokens": 37}}})
    assert usage_from_json(chat) == Usage(9657, 78, 0, 9654)
    responses = orjson.dumps({"object": "response", "id": "resp_1", "usage": {
        "input_tokens": 18014, "input_tokens_details": {"cache_write_tokens": 0, "cached_tokens": 18011},
        "output_tokens": 42, "output_tokens_details": {"reasoning_tokens": 25}, "total_tokens": 18056}})
    assert usage_from_json(responses) == Usage(18014, 42, 18011, 0, "resp_1")
    both = orjson.dumps({"usage": {"prompt_tokens": 100, "completion_tokens": 1,
                                   "prompt_tokens_details": {"cached_tokens": 70, "cache_write_tokens": 90}}})
    assert usage_from_json(both) == Usage(100, 1, 70, 30)  # never more cache parts than input
    stream = (b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
              b'data: {"choices":[],"usage":{"prompt_tokens":2006,"completion_tokens":300,'
              b'"prompt_tokens_details":{"cached_tokens":1024,"cache_write_tokens":900}}}\n\ndata: [DONE]\n\n')
    sse = SSEUsage()
    for i in range(0, len(stream), 11):
        sse.feed(stream[i:i + 11])
    sse.finish()
    assert sse.usage == Usage(2006, 300, 1024, 900)
    catalog = build_catalog(parse_config({"models": {"sol": {
        "provider": "openai", "name": "gpt-6.1-sol", "input_price": 2.0, "output_price": 10.0, "cached_input_price": 0.1,
        "cache_write_price": 2.5, "context_window": 1050000}}}))
    sol = catalog.models["sol"]
    assert Usage(9657, 78, 0, 9654).cost(sol) == pytest.approx((3 * 2.0 + 9654 * 2.5 + 78 * 10.0) / 1e6)


def test_deepseek_names_its_cache_hits():
    body = orjson.dumps({"usage": {"prompt_tokens": 900, "completion_tokens": 10, "prompt_cache_hit_tokens": 640,
                                   "prompt_cache_miss_tokens": 260}})
    assert usage_from_json(body) == Usage(900, 10, 640, 0)


def test_anthropic_reports_cache_reads_and_writes_beside_input_tokens():
    body = orjson.dumps({"type": "message", "usage": {"input_tokens": 50, "cache_creation_input_tokens": 200,
                                                      "cache_read_input_tokens": 1000, "output_tokens": 30}})
    assert usage_from_json(body) == Usage(1250, 30, 1000, 200)  # input is everything the prompt held


def test_streams_in_both_dialects_fed_in_small_pieces():
    openai = (b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
              b'data: {"choices":[],"usage":{"prompt_tokens":500,"completion_tokens":7,'
              b'"prompt_tokens_details":{"cached_tokens":384}}}\n\ndata: [DONE]\n\n')
    anthropic = (b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":20,'
                 b'"cache_creation_input_tokens":0,"cache_read_input_tokens":480,"output_tokens":1}}}\n\n'
                 b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"hi"}}\n\n'
                 b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":9}}\n\n')
    for stream, expected in ((openai, Usage(500, 7, 384, 0)), (anthropic, Usage(500, 9, 480, 0))):
        sse = SSEUsage()
        for i in range(0, len(stream), 7):
            sse.feed(stream[i:i + 7])
        sse.finish()
        assert sse.usage == expected


def test_anthropic_answers_name_the_signatures_of_their_thinking_blocks():
    answer = {"type": "message", "model": "claude-sonnet-4-20250514", "content": [
        {"type": "thinking", "thinking": "hm", "signature": "sig-A"}, {"type": "redacted_thinking", "data": "ZGF0YQ=="},
        {"type": "thinking", "thinking": "no signature"}, {"type": "text", "text": "hi"}],
        "usage": {"input_tokens": 10, "output_tokens": 5}}
    assert usage_from_json(orjson.dumps(answer)).thinking == ("sig-A", "ZGF0YQ==")
    assert usage_from_json(orjson.dumps({**answer, "type": "chat.completion"})).thinking == ()  # only Anthropic messages
    events = [
        {"type": "message_start", "message": {"usage": {"input_tokens": 10, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me see"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig-B" * 40}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "cmVk"}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "signature_delta is a word"}},
        {"type": "message_delta", "usage": {"output_tokens": 7}}]
    raw = b"".join(b"event: x\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)
    for size in (1, 7, 64, len(raw)):  # a signature split over chunks is read whole
        sse = SSEUsage()
        for i in range(0, len(raw), size):
            sse.feed(raw[i:i + size])
        sse.finish()
        assert sse.usage.thinking == ("sig-B" * 40, "cmVk") and sse.usage.output_tokens == 7


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 99}},  # more cached than sent
    {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": -3}},
    {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": "n/a"},
    {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": True},
])
def test_odd_cache_fields_never_exceed_the_input_or_go_negative(usage):
    u = usage_from_json(orjson.dumps({"usage": usage}))
    assert u is not None and u.input_tokens >= 10 and 0 <= u.cached_input_tokens <= u.input_tokens


def test_cost_prices_cache_reads_and_writes_where_the_catalog_has_them():
    catalog = build_catalog(load_config(None))
    claude, gpt4o = catalog.models["claude-3.5-sonnet"], catalog.models["gpt-4o"]
    u = Usage(1_000_000, 100_000, cached_input_tokens=600_000, cache_write_tokens=100_000)
    # 300k fresh at $3, 600k read at $0.30, 100k written at $3.75, 100k out at $15
    assert u.cost(claude) == pytest.approx(0.9 + 0.18 + 0.375 + 1.5)
    assert u.cost(gpt4o) == pytest.approx(5.0 + 1.5)  # no cache rate in the catalog: all input at $5
    assert Usage(1_000_000, 0).cost(claude) == pytest.approx(3.0)


def test_cache_prices_are_validated():
    from llm_router.config import ConfigError

    with pytest.raises(ConfigError, match=r"models\.m\.cached_input_price"):
        parse_config({"models": {"m": {"provider": "openai", "input_price": 1, "output_price": 1, "context_window": 1000,
                                       "cached_input_price": -1}}})


def test_cache_tokens_are_metered_and_the_cost_uses_their_price(tmp_path):
    from test_telemetry import chat, exchange, runtime

    async def go(usage):
        rt = runtime(tmp_path)
        await rt.start()
        try:
            await rt.take_changes(datetime(2026, 12, 1, 12, tzinfo=timezone.utc))  # off DeepSeek's peak, any day
            exchange(rt, chat("hello"), usage=usage)  # routed to deepseek-v2 (cache hits $0.003 vs $0.15 off-peak)
            await rt.shared.sync()
            return scrape_totals(rt.metrics.exposition().decode())
        finally:
            await rt.stop()

    cached = asyncio.run(go(Usage(100_000, 0, cached_input_tokens=80_000)))
    plain = asyncio.run(go(Usage(100_000, 0)))
    assert cached["llm_router_cache_tokens_total"] == 80_000
    assert plain.get("llm_router_cache_tokens_total", 0) == 0
    assert plain["llm_router_cost_usd_total"] - cached["llm_router_cost_usd_total"] == pytest.approx(80_000 * (0.15 - 0.003) / 1e6)
