"""Answer scorers: mean token logprob, and verifiers (JSON/JSON-schema, refusal and hedge phrases, answer format).

Every scorer returns a Score in 0..1 with a reason. Pure functions of the answer and the request;
the judge-model scorer (which makes a call) lives in judge.py.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from llm_router.classify.answer_kind import CODE_REQUEST, choice_letters


@dataclass(slots=True)
class Score:
    """How good an answer looks, 0..1, and why."""

    value: float
    reason: str
    source: str  # "logprob" | "verify" | "judge" | "agree"


@dataclass(slots=True)
class AnswerText:
    """What a scorer looks at in a provider's answer."""

    text: str
    finish_reason: str | None = None
    logprobs: list[float] | None = None
    refusal: str | None = None  # the provider's explicit refusal field (OpenAI chat)


# ---- reading answers -----------------------------------------------------------------------

def read_answer(api: str, body: bytes | dict) -> AnswerText | None:
    """The first choice's text, finish reason and token logprobs; None when the body is no answer."""
    try:
        data = orjson.loads(body) if isinstance(body, (bytes, bytearray, memoryview, str)) else body
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    if api == "responses" or data.get("object") == "response":
        return _response_answer(data)
    if api == "messages" or data.get("type") == "message":
        blocks = data.get("content")
        if not isinstance(blocks, list):
            return None
        text = "".join(b.get("text", "") for b in blocks if isinstance(b, dict) and isinstance(b.get("text"), str))
        return AnswerText(text, _norm_finish(data.get("stop_reason")))
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    c = choices[0]
    finish = _norm_finish(c.get("finish_reason"))
    lp = c.get("logprobs")
    if "message" in c:
        msg = c.get("message") if isinstance(c.get("message"), dict) else {}
        content = msg.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        if not isinstance(content, str):
            content = ""
        if not content and msg.get("tool_calls"):
            content = orjson.dumps(msg["tool_calls"]).decode()  # a tool call is an answer too
        refusal = msg.get("refusal") if isinstance(msg.get("refusal"), str) else None
        values = None
        if isinstance(lp, dict) and isinstance(lp.get("content"), list):
            values = [t["logprob"] for t in lp["content"] if isinstance(t, dict) and isinstance(t.get("logprob"), (int, float))]
        return AnswerText(content, finish, values or None, refusal)
    text = c.get("text") if isinstance(c.get("text"), str) else ""
    values = None
    if isinstance(lp, dict) and isinstance(lp.get("token_logprobs"), list):
        values = [v for v in lp["token_logprobs"] if isinstance(v, (int, float))]
    return AnswerText(text, finish, values or None)


def _response_answer(data: dict) -> AnswerText | None:
    """An OpenAI Responses object: its output messages' text (or its function calls), refusal and status."""
    output = data.get("output")
    if not isinstance(output, list):
        return None
    texts: list[str] = []
    calls: list[dict] = []
    refusal = None
    for item in output:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message" and isinstance(item.get("content"), list):
            for part in item["content"]:
                if isinstance(part, dict) and part.get("type") == "output_text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif isinstance(part, dict) and part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                    refusal = part["refusal"]
        elif item.get("type") == "function_call":
            calls.append(item)
    text = "".join(texts) or (orjson.dumps(calls).decode() if calls else "")  # a tool call is an answer too
    status = data.get("status")
    details = data.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    finish = "stop" if status == "completed" else "length" if reason == "max_output_tokens" else reason or status
    return AnswerText(text, finish if isinstance(finish, str) else None, None, refusal)


def _norm_finish(value: Any) -> str | None:
    if value in ("length", "max_tokens"):
        return "length"
    return value if isinstance(value, str) else None


# ---- logprob ---------------------------------------------------------------------------------

def logprob_score(logprobs: list[float] | None) -> Score | None:
    """exp(mean token logprob): the geometric-mean probability of the answer's tokens."""
    if not logprobs:
        return None
    mean = sum(logprobs) / len(logprobs)
    value = math.exp(max(mean, -50.0))
    return Score(value, f"mean logprob {mean:.2f} over {len(logprobs)} tokens", "logprob")


# ---- verifiers -------------------------------------------------------------------------------

# Written for this project: first-person refusals and hedges, matched on lower-cased text.
REFUSALS = (
    "i can't help with", "i cannot help with", "i can't assist", "i cannot assist", "i won't be able to",
    "i am unable to", "i'm unable to", "i must decline", "i can't provide", "i cannot provide", "i'm not able to",
    "i am not able to", "i can't comply", "i cannot comply", "i won't help", "as an ai language model, i cannot",
    "i'm sorry, but i can't", "i'm sorry, but i cannot", "sorry, i can't", "i can not help",
)
HEDGES = (
    "i'm not sure", "i am not sure", "i'm not certain", "i am not certain", "i don't know", "i do not know",
    "not enough information", "cannot be determined", "can't be determined", "it is unclear", "it's unclear",
    "hard to say", "difficult to say", "i cannot determine", "i can't determine", "i might be wrong",
    "i may be wrong", "without more context", "i'm guessing", "my best guess", "i cannot answer", "i can't answer",
)
REFUSAL_SCORE = 0.05
HEDGE_STEP = 0.25  # each distinct hedge takes this much off
HEDGE_MIN = 0.25
TRUNCATED_CAP = 0.6
_ANSWER_LETTER = re.compile(r"^\W*(?:(?:the\s+)?(?:correct\s+)?answer(?:\s+is)?\s*[:\-]?\s*)?\(?([A-Z])\)?\s*[.):]?\s*$", re.I)
_LETTER_TOKEN = re.compile(r"(?<![A-Za-z])([A-Z])(?![A-Za-z'])")
_CODE_PRESENT = re.compile(r"```|\bdef \w+\(|\bclass \w+[:(]|\bfunction \w*\(|\breturn\b|=>|#include|\bpublic static\b")


def format_score(text: str, letters: frozenset[str]) -> Score:
    """A multiple-choice answer: one valid option letter (alone is best)."""
    stripped = text.strip()
    m = _ANSWER_LETTER.match(stripped)
    if m and m.group(1).upper() in letters:
        return Score(1.0, f"a single valid option ({m.group(1).upper()})", "verify")
    found = {x for x in _LETTER_TOKEN.findall(stripped[:400]) if x in letters}
    if len(found) == 1:
        return Score(0.7, f"one valid option ({next(iter(found))}) with extra text", "verify")
    if len(found) > 1:
        return Score(0.3, f"several options named ({''.join(sorted(found))})", "verify")
    return Score(0.1, f"no valid option letter (expected one of {''.join(sorted(letters))})", "verify")


def requested_schema(body: dict[str, Any]) -> tuple[bool, dict | None]:
    """Whether the request asked for JSON output, and its JSON schema if it gave one."""
    rf = body.get("response_format")
    if isinstance(rf, dict):
        kind = rf.get("type")
        if kind == "json_schema":
            js = rf.get("json_schema")
            schema = js.get("schema") if isinstance(js, dict) else None
            return True, schema if isinstance(schema, dict) else None
        if kind == "json_object":
            return True, None
    return False, None


def json_score(text: str, schema: dict | None) -> Score:
    """JSON validity, and validity against the request's schema when it gave one."""
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return Score(0.0, f"not valid JSON ({str(exc)[:60]})", "verify")
    if schema is None:
        return Score(1.0, "valid JSON", "verify")
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - a dependency; degrade to validity only
        return Score(1.0, "valid JSON (schema not checked: jsonschema is not installed)", "verify")
    try:
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
    except jsonschema.exceptions.SchemaError as exc:
        return Score(1.0, f"valid JSON (the request's schema is invalid: {exc.message[:60]})", "verify")
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return Score(0.2, f"JSON does not match the schema at {where}: {error.message[:80]}", "verify")
    return Score(1.0, "valid JSON matching the schema", "verify")


def verify(answer: AnswerText, request_body: dict[str, Any], prompt: str) -> Score:
    """The verifier: the lowest of the checks that apply (empty, refusal, JSON/schema, format, hedges, truncation)."""
    text = answer.text or ""
    if answer.refusal:
        return Score(REFUSAL_SCORE, "the provider flagged a refusal", "verify")
    if not text.strip():
        return Score(0.0, "empty answer", "verify")
    low = text[:2000].lower().replace("\u2019", "'")
    for phrase in REFUSALS:
        if phrase in low:
            return Score(REFUSAL_SCORE, f"refusal ({phrase!r})", "verify")
    checks: list[Score] = []
    wants_json, schema = requested_schema(request_body)
    if wants_json:
        checks.append(json_score(text, schema))
    letters = choice_letters(prompt)
    if letters:
        checks.append(format_score(text, letters))
    elif CODE_REQUEST.search(prompt[-1500:]) and not wants_json:
        checks.append(Score(1.0, "code present", "verify") if _CODE_PRESENT.search(text)
                      else Score(0.3, "code was asked for and none is in the answer", "verify"))
    hedges = [h for h in HEDGES if h in low]
    if hedges:
        checks.append(Score(max(HEDGE_MIN, 1.0 - HEDGE_STEP * len(hedges)), f"hedges ({', '.join(repr(h) for h in hedges[:3])})", "verify"))
    if answer.finish_reason == "length":
        checks.append(Score(TRUNCATED_CAP, "cut off at the token limit", "verify"))
    if not checks:
        return Score(1.0, "no refusal, hedge or format problem found", "verify")
    return min(checks, key=lambda s: s.value)


def combined(answer: AnswerText, request_body: dict[str, Any], prompt: str, scorer: str) -> Score:
    """The scorer a policy names: logprob (verifier when there are none), verify, or auto (the lower of both)."""
    checked = verify(answer, request_body, prompt)
    if scorer == "verify":
        return checked
    lp = logprob_score(answer.logprobs)
    if lp is None:
        if scorer == "logprob":
            return Score(checked.value, f"no logprobs returned; verifier: {checked.reason}", "verify")
        return checked
    if scorer == "logprob":
        return lp
    return lp if lp.value <= checked.value else checked
