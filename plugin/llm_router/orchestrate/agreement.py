"""Agreement between answers: each answer's normalised final answer, and whether a quorum of them agree.

The final answer is what two models must share to count as agreeing: the option letter of a
multiple-choice prompt (an answer naming an option's text counts as its letter), the final
number of a math question, the normalised code of a coding request, the normalised text otherwise.
Pure functions of the answer texts and the prompt.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from llm_router.classify.answer_kind import answer_kind, choice_letters
from llm_router.orchestrate.scorers import Score

_SHOWN = 24  # characters of an answer shown in a reason

_LAST_QUESTION = re.compile(r"(?:^|\n)\s*\(?([A-H])[).:]\s+([^\n]+)")
_LETTER_ALONE = re.compile(r"^\W*(?:(?:the\s+)?(?:correct\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*)?"
                           r"\(?([A-H])(?:\s*$|\s*\n|\)|[.:](?:\s|$))", re.I)
_LETTER_STATED = re.compile(r"(?:answer|option|choice)\s*(?:is|would be|:)\s*\(?([A-H])\b(?![a-z'])", re.I)
# A standalone capital, not an article or pronoun opening a sentence ("A good point", "I think").
_LETTER_TOKEN = re.compile(r"(?<![A-Za-z'])([A-H])(?![A-Za-z'])(?!\s+(?!or\b|and\b)[a-z])")
_NUMBER = r"-?\$?\s?\d[\d,]*(?:\.\d+)?(?:/\d+)?"
_BOXED = re.compile(r"\\boxed\{\s*(" + _NUMBER + r")")
_MARKED = re.compile(r"(?:####|(?:final answer|answer)\s*(?:is|=|:)?)\s*[:=]?\s*\**\s*(" + _NUMBER + r")", re.I)
_ANY_NUMBER = re.compile(_NUMBER)
_FENCE = re.compile(r"```[\w+-]*\n?(.*?)(?:```|$)", re.S)
_PY_TAG = re.compile(r"\[PYTHON\](.*?)(?:\[/PYTHON\]|$)", re.S)
_LINE_COMMENT = re.compile(r"(?m)(?:#|//).*$")
_WORDS = re.compile(r"[^\w]+")


def options_of(prompt: str, letters: frozenset[str]) -> dict[str, str]:
    """The last question's options: letter -> normalised option text."""
    tail = prompt[-700:]
    out: dict[str, str] = {}
    for letter, text in _LAST_QUESTION.findall(tail):
        if letter in letters:
            out[letter] = _norm_text(text)
    return out


def _choice(text: str, prompt: str) -> str | None:
    letters = choice_letters(prompt) or frozenset()
    head = text.strip()[:400]
    if not head:
        return None
    m = _LETTER_ALONE.match(head)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    stated = {x.upper() for x in _LETTER_STATED.findall(head)} & letters
    if len(stated) == 1:
        return next(iter(stated))
    found = {x for x in _LETTER_TOKEN.findall(head) if x in letters}
    if len(found) == 1:
        return next(iter(found))
    if found:
        return None  # several options named: no single answer
    said = _norm_text(head)
    if not said:
        return None
    # An answer that names an option's text (or its cut-off start) instead of the letter.
    hits = [letter for letter, opt in options_of(prompt, letters).items()
            if opt and (said == opt or (len(said) >= 3 and opt.startswith(said)) or f" {opt} " in f" {said} ")]
    return hits[0] if len(hits) == 1 else None


def _number(text: str) -> str | None:
    for pattern in (_BOXED, _MARKED):
        found = pattern.findall(text)
        if found:
            return _norm_number(found[-1])
    found = _ANY_NUMBER.findall(text)
    return _norm_number(found[-1]) if found else None


def _norm_number(raw: str) -> str | None:
    s = raw.replace(",", "").replace("$", "").replace(" ", "")
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(s)
    except (ValueError, ZeroDivisionError):
        return None
    return f"{value:.6g}"


def _code(text: str) -> str | None:
    blocks = _PY_TAG.findall(text) or _FENCE.findall(text)
    body = "\n".join(blocks) if blocks else text
    body = _LINE_COMMENT.sub("", body)
    norm = " ".join(body.split())
    return norm or None


def _norm_text(text: str) -> str:
    return " ".join(_WORDS.sub(" ", text.lower()).split())


def final_answer(text: str | None, prompt: str) -> str | None:
    """The normalised final answer of `text` to `prompt`, or None when none can be read from it."""
    if text is None:
        return None
    kind = answer_kind(prompt)
    if kind == "choice":
        return _choice(text, prompt)
    if kind == "number":
        return _number(text)
    if kind == "code":
        return _code(text)
    norm = _norm_text(text)
    return norm or None


def _shown(value: str) -> str:
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "...")


def agreement(answers: Sequence[str | None], prompt: str) -> Score:
    """1.0 when every answer has the same final answer; 0.0 when they differ or one has none (the reason says which)."""
    if len(answers) < 2:
        return Score(0.0, f"agreement needs at least 2 answers, got {len(answers)}", "agree")
    finals = [final_answer(a, prompt) for a in answers]
    missing = [str(i + 1) for i, f in enumerate(finals) if f is None]
    if missing:
        return Score(0.0, f"no final answer in answer {', '.join(missing)} of {len(finals)}", "agree")
    distinct = list(dict.fromkeys(finals))
    if len(distinct) == 1:
        return Score(1.0, f"{len(finals)} answers agree on {_shown(distinct[0])}", "agree")
    return Score(0.0, "answers differ: " + " vs ".join(_shown(f) for f in distinct[:4] if f is not None), "agree")


def settle(finals: Sequence[str | None], quorum: int) -> int | None:
    """Index of the first answer whose final answer `quorum` answers share (in order), or None.

    The answers come cheapest first, so the answer returned for an agreement is the cheapest one
    that shares it. The runtime cascade and the eval replay both decide with this rule.
    """
    counts: dict[str, int] = {}
    for f in finals:
        if f is not None:
            counts[f] = counts.get(f, 0) + 1
    reached = [f for f, c in counts.items() if c >= quorum]
    if not reached:
        return None
    # Several answers can reach the quorum only when answers were added after the first stage;
    # the earliest-completed one wins: the one whose quorum-th vote came first.
    def completed_at(value: str) -> int:
        seen = 0
        for i, f in enumerate(finals):
            if f == value:
                seen += 1
                if seen == quorum:
                    return i
        return len(finals)
    winner = min(reached, key=completed_at)
    return next(i for i, f in enumerate(finals) if f == winner)
