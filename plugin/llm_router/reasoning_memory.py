"""Reasoning that DeepSeek's thinking models answered with, kept to pass back where a client leaves it out.

DeepSeek wants each assistant message's `reasoning_content` back (see message_rules.reasoned_assistant_messages).
Clients that speak plain OpenAI drop the field, and a stand-in is all the router could send instead. It now keeps what
the answers that passed through it held, keyed as the client sends the answer back (its first tool call id, or its
text), and sends the real reasoning where it has it. In memory, per process, bounded by characters; with Redis
state, llm_router.reasoning_sync shares it between processes.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

MAX_CHARS = 64_000  # of one answer's reasoning
MAX_TOTAL_CHARS = 16_000_000  # every answer's together, per process (least recently used go first)


class ReasoningMemory:
    """A least-recently-used map of answer key (message_rules.answer_key) -> the reasoning the answer held.

    `listener(key, text)` hears what this process keeps (so a sync can share it); `learn` takes what another
    process kept without passing it on.
    """

    def __init__(self, max_total: int = MAX_TOTAL_CHARS):
        self.max_total = max_total
        self.total = 0
        self._kept: OrderedDict[str, str] = OrderedDict()
        self.listener: Callable[[str, str], None] | None = None
        self.on_recall: Callable[[bool], None] | None = None  # hears each lookup: found (True) or a stand-in goes (False)

    def __len__(self) -> int:
        return len(self._kept)

    def remember(self, key: str, text: str) -> None:
        """Keep an answer's reasoning (cut at MAX_CHARS); the listener hears it when it is new or changed."""
        text = text[:MAX_CHARS]
        if self._kept.get(key) != text:
            self.learn(key, text)
            if self.listener is not None:
                self.listener(key, text)
        else:
            self._kept.move_to_end(key)

    def learn(self, key: str, text: str) -> None:
        """Keep an answer's reasoning, dropping the least recently used over the bound (not passed on to the listener)."""
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
        if self.on_recall is not None:
            self.on_recall(text is not None)
        return text
