"""What kind of final answer a prompt asks for, read from its text: option letters, a number, code or text.

Pure functions of the prompt. The cascade strategy keys per-kind chains by `policy_kind`, and the
agreement scorer, the runtime and the eval replay read kinds with the same functions, so they
agree on every request.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

BASE_KINDS = ("choice", "number", "code", "text")
DEFAULT = "default"

CHOICE_INSTRUCTION = re.compile(r"single (?:choice|letter|option)[^\n]{0,20}?from\s+((?:\"[A-Z]\"(?:\s*(?:,|or)\s*)?)+)", re.I)
QUOTED_LETTER = re.compile(r"\"([A-Z])\"")
OPTION_LINE = re.compile(r"(?:^|\n)\s*\(?([A-H])[).:]\s+\S")
CODE_REQUEST = re.compile(r"\b(?:write|implement|create|complete|fix)\b[^\n]{0,60}\b(?:function|program|script|class|method|code)\b", re.I)
MATH_PROMPT = re.compile(
    r"\bhow (?:many|much|long|far|old)\b|\b(?:calculate|compute|solve|evaluate|simplify)\b|\bwhat is \$?-?\d|"
    r"\d\s*[-+*/x×^]\s*\d|\b(?:sum|product|total|percent(?:age)?|remainder|average)\b[^\n]{0,40}\d", re.I)


def choice_letters(prompt: str) -> frozenset[str] | None:
    """The option letters a multiple-choice prompt allows, or None when it is not one."""
    tail = prompt[-1500:]
    m = None
    for m in CHOICE_INSTRUCTION.finditer(tail):
        pass
    if m is not None:
        letters = frozenset(QUOTED_LETTER.findall(m.group(1)))
        if len(letters) >= 2:
            return letters
    last_q = tail[-700:]
    opts = OPTION_LINE.findall(last_q)
    if len(opts) >= 2 and re.search(r"answer\s*:?\s*$", last_q.strip(), re.I):
        return frozenset(opts)
    return None


def open_kind(prompt: str) -> str:
    """The kind of a prompt that is not multiple choice: 'code', 'number' or 'text'."""
    tail = prompt[-1500:]
    if CODE_REQUEST.search(tail):
        return "code"
    if MATH_PROMPT.search(tail):
        return "number"
    return "text"


def answer_kind(prompt: str) -> str:
    """What a prompt's final answer is: 'choice' (an option letter), 'number', 'code' or 'text'."""
    if choice_letters(prompt):
        return "choice"
    return open_kind(prompt)


def policy_kind(prompt: str) -> str:
    """The kind a policy's `kinds` map is keyed by: 'choice:<n options>', 'number', 'code' or 'text'."""
    letters = choice_letters(prompt)
    if letters:
        return f"choice:{len(letters)}"
    return open_kind(prompt)


def lookup_key(kinds: Mapping[str, Any], kind: str) -> str | None:
    """The entry a kind takes: its own ('choice:4'), the coarse one ('choice'), then 'default'; None: the plain chain."""
    if kind in kinds:
        return kind
    coarse = kind.split(":", 1)[0]
    if coarse in kinds:
        return coarse
    return DEFAULT if DEFAULT in kinds else None
