"""Prices that change: on a day (changes) and by the hour (peak), in the config and in a running process.

Google bills Gemini 3.8 Flash at half price until 2026-12-31; DeepSeek bills deepseek-flash at twice its off-peak prices
from 01:00 to 04:00 and from 06:00 to 10:00 UTC on weekdays. A config holds the prices of the moment it is loaded; a running
processor takes each change at its moment, so routing, cost estimates, spend limits and the dollar metrics follow.
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from fixtures_envoy import LADDER
from llm_router.config import default_data, parse_config
from llm_router.router import Router
from test_tool_ids import check_output, refusal

KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "TOGETHER_API_KEY", "MISTRAL_API_KEY", "DEEPSEEK_API_KEY")
CHAT = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "Say hello to the team in one line."}]})


def at(text: str) -> datetime:
    """A moment in UTC from an ISO date or date and time."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def pinned(model: str) -> dict:
    return {"policies": {"default": {"classifier": "rules", "strategy": "ladder", "ladder": {t: model for t in LADDER}}}}


def runtime(monkeypatch, data: dict, telemetry: bool = False):
    from llm_router.runtime import Runtime

    for name in KEYS:
        monkeypatch.setenv(name, "k")
    return Runtime(parse_config(data), telemetry=telemetry)


def cost(rt) -> float:
    _, decision = rt.router.route(CHAT)
    return decision.estimated_cost


def test_a_running_process_routes_and_bills_at_the_new_prices_from_the_day_on(monkeypatch):
    rt = runtime(monkeypatch, pinned("gemini-1.5-pro"))
    asyncio.run(rt.take_changes(at("2026-12-30T12:00")))  # the half price, whatever day the test runs on
    assert rt.catalog.models["gemini-1.5-pro"].output_price == 3.75
    before = cost(rt)
    assert asyncio.run(rt.take_changes(at("2026-12-31T12:00"))) == []
    assert cost(rt) == before
    assert asyncio.run(rt.take_changes(at("2027-01-01T00:00"))) == ["gemini-1.5-pro"]
    assert rt.catalog.models["gemini-1.5-pro"].output_price == 7.5
    assert rt.catalog.models["gemini-1.5-pro"].cost(1_000_000, 0) == pytest.approx(1.5)
    assert cost(rt) == pytest.approx(2 * before)  # every price of the slot doubled
    assert asyncio.run(rt.take_changes(at("2027-01-02T12:00"))) == []  # taken once (a Saturday: no peak either)


def test_deepseek_bills_twice_in_its_weekday_peak_hours(monkeypatch):
    cfg = parse_config(None)
    for moment, peak in (("2026-11-30T00:59", False), ("2026-11-30T01:00", True), ("2026-11-30T03:59", True),
                         ("2026-11-30T04:00", False), ("2026-11-30T06:00", True), ("2026-11-30T10:00", False),
                         ("2026-12-05T02:00", False), ("2026-12-06T07:00", False)):  # a Monday, then a Saturday and Sunday
        m = cfg.as_of(at(moment)).models["deepseek-v2"]
        factor = 2 if peak else 1
        assert (m.input_price, m.output_price, m.cached_input_price) == (0.15 * factor, 0.6 * factor, 0.003 * factor), moment
    slot = cfg.models["deepseek-v2"]
    assert slot.next_change(at("2026-11-30T00:30")) == at("2026-11-30T01:00")
    assert slot.next_change(at("2026-11-30T04:00")) == at("2026-11-30T06:00")
    assert slot.next_change(at("2026-12-04T10:00")) == at("2026-12-07T01:00")  # Friday's last peak ends: Monday's
    rt = runtime(monkeypatch, pinned("deepseek-v2"))
    asyncio.run(rt.take_changes(at("2026-11-30T00:30")))
    off = cost(rt)
    assert asyncio.run(rt.take_changes(at("2026-11-30T01:00"))) == ["deepseek-v2"]
    assert cost(rt) == pytest.approx(2 * off)
    usage_cost = rt.catalog.models["deepseek-v2"].cost(10_000, 1_000, cached=8_000)
    assert usage_cost == pytest.approx((2_000 * 0.3 + 8_000 * 0.006 + 1_000 * 1.2) / 1e6)
    assert asyncio.run(rt.take_changes(at("2026-11-30T04:00"))) == ["deepseek-v2"]
    assert cost(rt) == pytest.approx(off)


def test_deepseek_bills_chinese_public_holidays_off_peak():
    cfg = parse_config(None)
    for moment, peak in (("2027-01-01T02:00", False), ("2027-01-04T02:00", True), ("2027-02-05T07:00", False),
                         ("2027-02-08T02:00", False), ("2027-02-09T02:00", True)):  # Fri New Year's Day, Mon; the Spring
        factor = 2 if peak else 1                                                 # Festival's eve (Fri), third day (Mon)
        assert cfg.as_of(at(moment)).models["deepseek-v2"].output_price == 0.6 * factor, moment
    slot = cfg.models["deepseek-v2"]
    assert slot.next_change(at("2026-12-31T10:00")) == at("2027-01-04T01:00")  # past the holiday and the weekend
    assert slot.next_change(at("2027-02-04T10:00")) == at("2027-02-09T01:00")
    many = parse_config({"models": {"d": {**default_data()["models"]["deepseek-v2"], "peak": {
        **default_data()["models"]["deepseek-v2"]["peak"], "off_days": [f"2027-10-{d:02d}" for d in range(1, 16)]}}}})
    assert many.models["d"].next_change(at("2027-09-30T10:00")) == at("2027-10-18T01:00")  # a long run of days off
    assert "models.g.peak.off_days" in refusal({"models": {"g": {**default_data()["models"]["deepseek-v2"], "peak": {
        **default_data()["models"]["deepseek-v2"]["peak"], "off_days": ["2027-02-30"]}}}})


def test_the_price_clock_takes_a_change_at_its_moment(monkeypatch):
    """The running clock, on a clock of its own that starts just before DeepSeek's peak begins."""
    import llm_router.runtime as runtime_module

    start, began = at("2026-11-30T00:59:59.7"), time.monotonic()
    monkeypatch.setattr(runtime_module, "utc_now", lambda: start + timedelta(seconds=time.monotonic() - began))
    rt = runtime(monkeypatch, pinned("deepseek-v2"))

    async def run() -> float:
        await rt.take_changes(start)
        assert rt.catalog.models["deepseek-v2"].output_price == 0.6  # off-peak, a few tenths of a second before it ends
        await rt.start()
        try:
            assert rt._catalog_clock_task is not None and rt._catalog_clock_task.running
            deadline = time.monotonic() + 30
            while rt.catalog.models["deepseek-v2"].output_price != 1.2:
                assert time.monotonic() < deadline, "the peak was not taken"
                await asyncio.sleep(0.02)
            return time.monotonic() - began
        finally:
            await rt.stop()

    taken = asyncio.run(run())
    assert taken >= 0.3  # not before its moment


def test_the_price_clock_runs_from_start_to_stop_and_takes_nothing_when_nothing_changes(monkeypatch):
    models = default_data()["models"]
    steady = {"models": {"deepseek-v2": {k: v for k, v in models["deepseek-v2"].items() if k != "peak"},
                         "gemini-1.5-pro": {k: v for k, v in models["gemini-1.5-pro"].items() if k != "changes"},
                         "gpt-4o": {k: v for k, v in models["gpt-4o"].items() if k != "changes"}}}
    rt = runtime(monkeypatch, steady)
    assert rt.config.next_change(at("2026-11-30")) is None

    async def run() -> None:
        await rt.start()
        try:
            assert rt._catalog_clock_task is not None and rt._catalog_clock_task.running  # it also serves a reloaded config's changes
            assert await rt.take_changes(at("2027-06-01T02:00")) == []  # no schedule: nothing to take
        finally:
            await rt.stop()
        assert rt._catalog_clock_task is None

    asyncio.run(run())
    past = {"models": {"gemini-1.5-pro": {**models["gemini-1.5-pro"], "changes": {"2020-01-01": {"output_price": 9.0}}}}}
    assert parse_config(past).models["gemini-1.5-pro"].output_price == 9.0  # a change already due is in the loaded prices


def test_a_change_may_set_what_a_successor_differs_in_and_unset_an_optional_field():
    slot = {"provider": "openai", "name": "old-model", "input_price": 1.0, "output_price": 2.0, "cached_input_price": 0.5,
            "context_window": 8000, "max_output_tokens": 4000, "capabilities": ["tools", "logprobs"],
            "body": {"drop": ["reasoning_effort"]}, "changes": {"2027-03-01": {
                "name": "new-model", "cached_input_price": None, "max_output_tokens": None, "capabilities": ["tools"],
                "body": {"rename": {"max_tokens": "max_completion_tokens"}}, "prefill": False, "quality": 0.9, "rpm": 60,
                "long_context_prices": {"above_input_tokens": 100000, "input_factor": 2}}}}
    cfg = parse_config({"models": {"m": slot}})
    before, after = cfg.as_of(at("2027-02-28T23:59")).models["m"], cfg.as_of(at("2027-03-01")).models["m"]
    assert (before.name, before.cached_input_price, before.max_output_tokens, before.prefill) == ("old-model", 0.5, 4000, True)
    assert (after.name, after.cached_input_price, after.max_output_tokens, after.prefill) == ("new-model", None, None, False)
    assert after.capabilities == ["tools"] and after.body.rename == {"max_tokens": "max_completion_tokens"}
    assert after.body.drop == [] and (after.quality, after.rpm) == (0.9, 60)
    assert after.long_context_prices.output_factor == 1.0 and before.long_context_prices is None
    assert after.input_price == before.input_price == 1.0  # not given: as it was
    model = Router(cfg.as_of(at("2027-03-01"))).catalog.models["m"]
    assert model.long_context == (100000, 2.0, 1.0) and model.cost(100001, 10) == pytest.approx((100001 * 2.0 + 10 * 2.0) / 1e6)


def test_bad_changes_are_refused_naming_the_field():
    slot = default_data()["models"]["deepseek-v2"]

    def changed(**fields) -> str:
        return refusal({"models": {"g": {**slot, "changes": {"2027-02-01": fields}}}})

    assert "input_price, quality may not be null" in changed(input_price=None, quality=None)
    assert "unknown capabilities ['telepathy']" in changed(capabilities=["telepathy"])
    assert "models.g.changes.2027-02-01.long_context_prices.above_input_tokens" in changed(
        long_context_prices={"input_factor": 2})
    assert "models.g.changes.2027-02-01.body.rename" in changed(body={"rename": ["max_tokens"]})
    assert "models.g.changes.2027-02-01.provider" in changed(provider="openai")  # a successor of another provider: a new slot
    assert "models.g.long_context_prices.input_factor" in refusal(
        {"models": {"g": {**slot, "long_context_prices": {"above_input_tokens": 1000, "input_factor": 0}}}})


def test_bad_price_schedules_are_refused_naming_the_field():
    slot = default_data()["models"]["deepseek-v2"]
    peak = slot["peak"]
    assert "models.g.changes.2027-13-01" in refusal({"models": {"g": {**slot, "changes": {"2027-13-01": {
        "input_price": 1.0}}}}})
    assert "a change needs at least one of name, input_price" in refusal(
        {"models": {"g": {**slot, "changes": {"2027-02-01": {}}}}})
    assert "output_price" in refusal({"models": {"g": {**slot, "changes": {"2027-02-01": {"output_price": -1}}}}})
    for bad, named in ((["04:00-01:00"], "must start before it ends"), (["01:00-25:00"], "within one day"),
                       (["1-4"], "is not a span of hours like '01:00-04:00'"), ([], "hours_utc")):
        assert named in refusal({"models": {"g": {**slot, "peak": {**peak, "hours_utc": bad}}}}), bad
    assert "models.g.peak.days" in refusal({"models": {"g": {**slot, "peak": {**peak, "days": ["monday"]}}}})
    assert "models.g.peak.factor" in refusal({"models": {"g": {**slot, "peak": {**peak, "factor": 0}}}})


def test_check_shows_each_schedule(tmp_path, capsys):
    out = check_output(tmp_path, {}, capsys)
    assert "prices x2 in 01:00-04:00, 06:00-10:00 UTC on mon, tue, wed, thu, fri except 2027-01-01, 2027-02-05, 2027-02-08 (" \
        in out
    assert "from 2027-01-01: input_price $1.5, output_price $7.5, cached_input_price $0.15" in out


def test_the_price_gauges_show_what_each_model_is_billed_at_now(monkeypatch):
    from llm_router.metrics import scrape_totals

    rt = runtime(monkeypatch, pinned("deepseek-v2"), telemetry=True)

    def gauge(model: str, kind: str) -> float:
        line = f'llm_router_price_usd_per_mtok{{kind="{kind}",model="{model}"}} '
        [value] = [x[len(line):] for x in rt.metrics.exposition().decode().splitlines() if x.startswith(line)]
        return float(value)

    asyncio.run(rt.take_changes(at("2026-11-30T00:30")))
    assert (gauge("deepseek-v2", "input"), gauge("deepseek-v2", "output"), gauge("deepseek-v2", "cached_input")) == (0.15, 0.6, 0.003)
    assert gauge("gpt-4o", "cache_write") == 5.0  # no cache price: its input price
    asyncio.run(rt.take_changes(at("2026-11-30T01:00")))
    assert (gauge("deepseek-v2", "input"), gauge("deepseek-v2", "output"), gauge("deepseek-v2", "cached_input")) == (0.3, 1.2, 0.006)
    assert scrape_totals(rt.metrics.exposition().decode())["llm_router_price_usd_per_mtok"] > 0
