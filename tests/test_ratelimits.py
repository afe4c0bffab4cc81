"""Rate-limit headers in each provider's dialect, read into remaining quota and a wait."""
from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from llm_router.ratelimits import collect, duration_s, read, reset_in_s, retry_after_s

NOW = 1_800_000_000.0  # a fixed wall clock for absolute times


@pytest.mark.parametrize("text, seconds", [
    ("1s", 1.0), ("20ms", 0.02), ("6m0s", 360.0), ("1h2m3.5s", 3723.5), ("2.5", 2.5), ("0s", 0.0), ("150us", 0.00015),
    (" 7s ", 7.0),
])
def test_go_durations_and_plain_seconds(text, seconds):
    assert duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5x", "1s2", "-3", "nan", "inf", "m5s", None])
def test_bad_durations_are_none_not_errors(text):
    assert duration_s(text) is None


def test_retry_after_seconds_or_http_date():
    assert retry_after_s("12", NOW) == 12.0
    assert retry_after_s(formatdate(NOW + 30, usegmt=True), NOW) == pytest.approx(30.0)
    assert retry_after_s(formatdate(NOW - 30, usegmt=True), NOW) == 0.0  # already past: retry now
    assert retry_after_s("next tuesday", NOW) is None


def test_resets_relative_rfc3339_or_epoch():
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW + 45))
    assert reset_in_s(at, NOW) == pytest.approx(45.0)
    assert reset_in_s("2026-11-28T21:00:00+00:00", NOW) == 0.0  # in the past for this clock
    assert reset_in_s("6m0s", NOW) == 360.0
    assert reset_in_s(str(int(NOW + 10)), NOW) == pytest.approx(10.0)  # epoch seconds are absolute
    assert reset_in_s(str(int(NOW - 10)), NOW) == 0.0
    assert reset_in_s("whenever", NOW) is None


def test_openai_dialect_scarcest_window_and_reset_of_the_exhausted_one():
    found = collect([("X-RateLimit-Limit-Requests", "500"), ("x-ratelimit-remaining-requests", "0"),
                     ("x-ratelimit-reset-requests", "6m0s"), ("x-ratelimit-limit-tokens", "100000"),
                     ("x-ratelimit-remaining-tokens", "90000"), ("x-ratelimit-reset-tokens", "20ms"),
                     ("content-type", "application/json"), ("authorization", "Bearer sk-never-kept")])
    assert "authorization" not in found and "content-type" not in found
    limits = read(found, NOW)
    assert limits.remaining_share == 0.0
    assert limits.wait_s == 360.0  # no retry-after: the exhausted requests window's reset


def test_anthropic_dialect_on_a_success_and_a_429():
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW + 50))
    ok = {"anthropic-ratelimit-requests-limit": "1000", "anthropic-ratelimit-requests-remaining": "600",
          "anthropic-ratelimit-requests-reset": reset, "anthropic-ratelimit-input-tokens-limit": "40000",
          "anthropic-ratelimit-input-tokens-remaining": "10000", "anthropic-ratelimit-input-tokens-reset": reset}
    limits = read(collect(ok), NOW)
    assert limits.remaining_share == pytest.approx(0.25) and limits.wait_s is None
    limited = {**ok, "anthropic-ratelimit-requests-remaining": "0"}
    assert read(collect(limited), NOW).wait_s == pytest.approx(50.0)  # from the RFC 3339 reset
    assert read(collect({**limited, "retry-after": "8"}), NOW).wait_s == 8.0  # retry-after wins
    assert read(collect({**limited, "retry-after": "8", "retry-after-ms": "2500"}), NOW).wait_s == 2.5


def test_gemini_sends_only_retry_after_and_garbage_is_ignored():
    assert read(collect({"Retry-After": "37"}), NOW) == read(collect([(b"retry-after", b"37")]), NOW)
    assert read(collect({"Retry-After": "37"}), NOW).wait_s == 37.0
    junk = read(collect({"x-ratelimit-remaining-requests": "lots", "x-ratelimit-limit-requests": "0",
                         "anthropic-ratelimit-unified-status": "allowed", "retry-after": "later"}), NOW)
    assert junk.remaining_share is None and junk.wait_s is None
    assert read({}, NOW).remaining_share is None


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_NAMES = st.sampled_from(["retry-after", "retry-after-ms", "x-ratelimit-remaining-requests", "x-ratelimit-limit-requests",
                          "x-ratelimit-reset-tokens", "anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-limit",
                          "anthropic-ratelimit-requests-reset", "x-ratelimit-", "anthropic-ratelimit--", "Retry-After"]) | st.text(max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_NAMES, st.text(max_size=40) | st.sampled_from(["0", "1e309", "-1", "6m0s", "1h", "NaN", "9" * 40,
                                                                            "2026-13-45T99:99:99Z", "Mon, 32 Foo 2026"]))),
       st.floats(min_value=0, max_value=4e9))
def test_any_header_values_give_a_view_never_an_exception(pairs, now):
    limits = read(collect(pairs), now)
    assert limits.remaining_share is None or 0.0 <= limits.remaining_share <= 1.0
    assert limits.wait_s is None or limits.wait_s >= 0.0
