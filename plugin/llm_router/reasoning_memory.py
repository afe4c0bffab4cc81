"""Reasoning that DeepSeek's thinking models answered with, kept to pass back where a client leaves it out.

DeepSeek wants each assistant message's `reasoning_content` back (see message_rules.reasoned_assistant_messages).
Clients that speak plain OpenAI drop the field, and a stand-in is all the router could send instead. It now keeps what
the answers that passed through it held, keyed as the client sends the answer back (its first tool call id, or its
text), and sends the real reasoning where it has it. In memory, per process, bounded by characters.
"""
from __future__ import annotations

from collections import OrderedDict

MAX_CHARS = 64_000  # of one answer's reasoning
MAX_TOTAL_CHARS = 16_000_000  # every answer's together, per process (least recently used go first)


class ReasoningMemory:
    """A least-recently-used map of answer key (message_rules.answer_key) -> the reasoning the answer held."""

    def __init__(self, max_total: int = MAX_TOTAL_CHARS):
        self.max_total = max_total
        self.total = 0
        self._kept: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def remember(self, key: str, text: str) -> None:
        """Keep an answer's reasoning (cut at MAX_CHARS), dropping the least recently used over the bound."""
        text = text[:MAX_CHARS]
        old = self._kept.pop(key, None)
        if old is not None:
            self.total -= len(old)
        self._kept[key] = text
        self.total += len(text)
        while self.total > self.max_total and self._kept:
            _, gone = self._kept.popitem(last=False)
            self.total -= len(gone)

    def recall(self, key: str) -> str | None:
        """The reasoning kept for an answer, or None."""
        text = self._kept.get(key)
        if text is not None:
            self._kept.move_to_end(key)
        return text
