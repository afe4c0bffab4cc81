"""Deterministic fake answers: text, token counts and quality, derived from the prompt and model."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from llm_router.request import estimate_tokens

_WORDS = ("the", "model", "answer", "step", "result", "value", "first", "then", "because", "so", "we", "check",
          "data", "this", "that", "case", "with", "and", "a", "of", "is", "to", "in", "it", "for", "on", "as")


@dataclass(frozen=True, slots=True)
class Answer:
    """What a fake model says and what it reports as usage."""

    text: str
    input_tokens: int
    output_tokens: int
    good: bool  # whether this answer counts as a good one (per-model quality)
    cached_tokens: int = 0  # of input_tokens, as if read from the provider's prompt cache
    cache_write_tokens: int = 0  # of input_tokens, as if written to it
    finish: str = "stop"  # "length" where the output limit cut the answer (a thinking model's thoughts used it up)
    reasoning_tokens: int = 0  # of output_tokens, spent reasoning before the answer (OpenAI's reasoning models)


def _digest(*parts: str) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest(), "big")


def make_answer(model: str, prompt: str, *, max_tokens: int | None, quality: float, output_tokens: int | None = None) -> Answer:
    """The same prompt and model always give the same answer."""
    h = _digest(model, prompt)
    out = output_tokens if output_tokens is not None else 40 + h % 360
    if max_tokens:
        out = max(1, min(out, max_tokens))
    good = ((h >> 20) % 10_000) / 10_000 < quality
    words = [_WORDS[(h >> (i % 48)) % len(_WORDS)] for i in range(max(3, min(out, 400) * 3 // 4))]
    text = f"[{model}{'' if good else ' (weak)'}] " + " ".join(words) + "."
    return Answer(text=text, input_tokens=max(1, estimate_tokens(prompt)), output_tokens=out, good=good)


def split_text(text: str, parts: int) -> list[str]:
    """Cut a text into about `parts` pieces for streaming."""
    parts = max(1, parts)
    step = max(1, -(-len(text) // parts))
    return [text[i:i + step] for i in range(0, len(text), step)]
