"""What the fake providers answer: bodies in each API's shape (OpenAI chat, completions and Responses; Anthropic)."""
from __future__ import annotations

import base64
import time
import uuid
from dataclasses import replace
from typing import Any

import orjson

from llm_router.fakes.answers import Answer


def prompt_text(data: dict[str, Any], api: str) -> str:
    """The text a request asks about (its prompt, instructions and messages), for the fake answer."""
    if api == "completions":
        prompt = data.get("prompt")
        return prompt if isinstance(prompt, str) else orjson.dumps(prompt).decode()
    if api == "responses":
        texts = [data["instructions"]] if isinstance(data.get("instructions"), str) else []
        inp = data.get("input")
        items = [{"content": inp}] if isinstance(inp, str) else inp if isinstance(inp, list) else []
        for item in items:
            content = item.get("content") if isinstance(item, dict) else None
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "\n".join(texts)
    parts = []
    system = data.get("system")
    if isinstance(system, str):
        parts.append(system)
    for msg in data.get("messages") or []:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "\n".join(parts)


def openai_usage(answer: Answer, provider: str = "") -> dict[str, Any]:
    """OpenAI's usage object (cached tokens counted inside prompt_tokens); DeepSeek names its cache hits itself."""
    out: dict[str, Any] = {"prompt_tokens": answer.input_tokens, "completion_tokens": answer.output_tokens,
                           "total_tokens": answer.input_tokens + answer.output_tokens}
    if provider == "deepseek":
        out["prompt_cache_hit_tokens"] = answer.cached_tokens
        out["prompt_cache_miss_tokens"] = answer.input_tokens - answer.cached_tokens
    else:
        out["prompt_tokens_details"] = {"cached_tokens": answer.cached_tokens, "audio_tokens": 0}
        if answer.cache_write_tokens:  # reported since GPT-5.6, which bills writes at 1.25x input
            out["prompt_tokens_details"]["cache_write_tokens"] = answer.cache_write_tokens
        out["completion_tokens_details"] = {"reasoning_tokens": answer.reasoning_tokens, "audio_tokens": 0}
    return out


def anthropic_input(answer: Answer) -> dict[str, int]:
    """Anthropic's input fields: input_tokens excludes what was read from (or written to) the cache."""
    return {"input_tokens": answer.input_tokens - answer.cached_tokens - answer.cache_write_tokens,
            "cache_creation_input_tokens": answer.cache_write_tokens, "cache_read_input_tokens": answer.cached_tokens}


def token_logprobs(answer: Answer) -> dict[str, Any]:
    """Per-token logprobs (chat `logprobs: true`): confident for good answers, low for weak ones."""
    tokens = answer.text.split(" ")[:256]
    base, spread = (-0.05, 0.3) if answer.good else (-1.3, 1.2)
    return {"content": [{"token": t, "logprob": round(base - spread * ((sum(map(ord, t)) % 256) / 255), 4), "bytes": None,
                         "top_logprobs": []} for t in tokens]}


def reasoning_text(model: str, answer: Answer) -> str:
    """What a fake thinking model says it thought before answering."""
    return f"The question asks for about {answer.output_tokens} tokens; {model} plans its answer before writing it."



def openai_json(model: str, answer: Answer, api: str, *, logprobs: bool = False, provider: str = "", choices: int = 1,
                 reasoning: bool = False) -> bytes:
    """A chat or completions answer with `choices` choices; usage counts the output of all of them."""
    usage = openai_usage(replace(answer, output_tokens=answer.output_tokens * choices), provider)
    if api == "completions":
        return orjson.dumps({"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                             "model": model, "choices": [{"index": i, "text": answer.text, "logprobs": None, "finish_reason": answer.finish}
                                                         for i in range(choices)],
                             "usage": usage})
    return orjson.dumps({
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": i, "message": {"role": "assistant", "content": answer.text, "refusal": None,
                                             **({"reasoning_content": reasoning_text(model, answer)} if reasoning else {})},
                     "logprobs": token_logprobs(answer) if logprobs else None, "finish_reason": answer.finish}
                    for i in range(choices)],
        "usage": usage,
    })


def input_items(value: Any) -> list[dict[str, Any]]:
    """A Responses request's input as the input items OpenAI lists for it (each with an id)."""
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}] if isinstance(value, str) \
        else [dict(item) for item in value if isinstance(item, dict)] if isinstance(value, list) else []
    return [{"id": f"msg_{uuid.uuid4().hex[:24]}", **item} for item in items]


def response_object(model: str, answer: Answer, data: dict[str, Any], rid: str, *, status: str = "completed") -> dict[str, Any]:
    """An OpenAI Responses `response` object: the answer as one output message, usage once completed."""
    done = status == "completed"
    output = [{"id": f"msg_{rid[5:]}", "type": "message", "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": answer.text, "annotations": []}]}] if done else []
    details = {"cached_tokens": answer.cached_tokens, **({"cache_write_tokens": answer.cache_write_tokens}
                                                          if answer.cache_write_tokens else {})}
    usage = {"input_tokens": answer.input_tokens, "input_tokens_details": details,
             "output_tokens": answer.output_tokens, "output_tokens_details": {"reasoning_tokens": answer.reasoning_tokens},
             "total_tokens": answer.input_tokens + answer.output_tokens} if done else None
    return {"id": rid, "object": "response", "created_at": int(time.time()), "status": status, "error": None,
            "incomplete_details": None, "instructions": data.get("instructions"), "max_output_tokens": data.get("max_output_tokens"),
            "model": model, "output": output, "parallel_tool_calls": True, "previous_response_id": data.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None}, "store": data.get("store", True), "temperature": 1.0,
            "text": data.get("text") or {"format": {"type": "text"}}, "tool_choice": "auto", "tools": data.get("tools") or [],
            "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": None, "metadata": {}}


FAKE_THOUGHT = "Let me work through this step by step."
SIGNATURE_MARK = "fake-thinking"


def thinking_signature(model: str) -> str:
    """A signature bound to the model that thought (as Anthropic's are), readable by the fakes alone."""
    return base64.b64encode(f"{SIGNATURE_MARK}|{model}|{uuid.uuid4().hex}".encode()).decode()


def signed_by(signature: Any) -> str | None:
    """The model a fake signature was made for; None for any other signature (the fakes cannot tell those apart)."""
    try:
        mark, model, _ = base64.b64decode(signature, validate=True).decode().split("|")
    except (TypeError, ValueError):
        return None
    return model if mark == SIGNATURE_MARK else None


def anthropic_json(model: str, answer: Answer, signed: str | None = None) -> bytes:
    """An Anthropic Messages answer, after a thinking block when the model was asked to think (signed: its signature)."""
    thought = [{"type": "thinking", "thinking": FAKE_THOUGHT, **({"signature": signed} if signed else {})}] if signed is not None else []
    return orjson.dumps({
        "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": model,
        "content": [*thought, {"type": "text", "text": answer.text}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {**anthropic_input(answer), "output_tokens": answer.output_tokens},
    })
