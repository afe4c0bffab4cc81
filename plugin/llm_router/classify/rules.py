"""Rules classifier: keywords, phrases, regexes, length and structure, all from config."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import partial

from llm_router.catalog import Tier
from llm_router.classify.base import Classification, Evidence, tier_for_score
from llm_router.request import LLMRequest

# Punctuation becomes a word break, except characters that carry meaning in code words (c++, c#).
_BREAK_CHARS = b"!\"$%&'()*,-./:;<=>?@[\\]^`{|}~\t\r\n"
_BREAKS = bytes.maketrans(_BREAK_CHARS, b" " * len(_BREAK_CHARS))


_META = set(".^$*+?{}[]|()\\")
_ESCAPES = {"n": "\n", "t": "\t", " ": " ", "#": "#", "-": "-", "/": "/", "=": "=", ">": ">"}


def _literal_prefix(pattern: str) -> str:
    """The literal text every match of `pattern` starts with ('' when there is none to rely on)."""
    if _top_level_alternation(pattern):
        return ""  # a match may start with another branch
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern) and pattern[i + 1] in _ESCAPES:
            out.append(_ESCAPES[pattern[i + 1]])
            i += 2
            continue
        if ch in _META:
            break
        out.append(ch)
        i += 1
    if i < len(pattern) and pattern[i] in "*?{" and out:
        out.pop()  # the last literal is optional or repeated
    literal = "".join(out)
    return literal if literal == literal.lower() else ""


def _top_level_alternation(pattern: str) -> bool:
    """Whether `pattern` has a `|` outside any group or character class."""
    depth, i, in_class = 0, 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            return True
        i += 1
    return False


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule and what a match means.

    Matching is on the lower-cased prompt. `keywords` are words or phrases matched on word
    boundaries; `starts_with` must open the prompt; `patterns` are regexes (start each with a literal and
    avoid top-level alternation: Python's regex engine scans for one literal prefix quickly,
    and tries every position for a bare `\\b` or an alternation).
    """

    name: str
    keywords: tuple[str, ...] = ()
    starts_with: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    weight: float = 0.0  # added to the complexity score on a match (may be negative)
    category: str | None = None
    min_tier: Tier | None = None  # a match lifts the tier to at least this
    max_tier: Tier | None = None  # a match caps the tier (for clearly trivial prompts)
    per_hit: bool = False  # weight per distinct keyword matched (up to 3) instead of once


@dataclass(frozen=True, slots=True)
class LengthScale:
    """Length contributes weight * log(tokens) / log(full_at_tokens), capped at weight."""

    weight: float = 0.35
    full_at_tokens: int = 3000


class RulesClassifier:
    """Scores a prompt by the rules it matches plus its length and structure."""

    name = "rules"

    def __init__(self, rules: list[Rule], *, cuts: tuple[float, float, float] = (0.2, 0.45, 0.7),
                 length: LengthScale = LengthScale(), base: float = 0.05, default_category: str = "chat"):
        self.rules = tuple(rules)
        self.cuts = cuts
        self.length = length
        self.base = base
        self.default_category = default_category
        self._log_full = math.log(max(2, length.full_at_tokens))
        # Index: single words -> rules (set intersection), phrases -> rules (substring search
        # on the space-normalised text), regexes and prefixes per rule.
        self._words: dict[str, list[int]] = {}
        self._phrases: dict[str, list[tuple[str, int]]] = {}  # first word -> (phrase, rule)
        self._prefixes: dict[str, list[tuple[str, int]]] = {}  # first word -> (prefix, rule)
        self._patterns: list[tuple[str, re.Pattern[str], int]] = []  # (required literal, regex, rule)
        for i, rule in enumerate(self.rules):
            for kw in rule.keywords:
                norm = " ".join(kw.lower().encode().translate(_BREAKS).decode().split())
                if " " in norm:
                    self._phrases.setdefault(norm.split(" ", 1)[0], []).append((f" {norm} ", i))
                elif norm:
                    self._words.setdefault(norm, []).append(i)
            for prefix in rule.starts_with:
                norm = " ".join(prefix.lower().encode().translate(_BREAKS).decode().split())
                if norm:
                    self._prefixes.setdefault(norm.split(" ", 1)[0], []).append((f" {norm} ", i))
            for pattern in rule.patterns:
                self._patterns.append((_literal_prefix(pattern), re.compile(pattern, re.MULTILINE), i))
        self._vocab = frozenset(self._words)
        self._firsts = frozenset(self._phrases)

    def matches(self, text: str) -> dict[int, int]:
        """Rule index -> number of distinct keywords (or 1 for a pattern/prefix) that matched."""
        low = text.lower()
        words = low.encode("utf-8", "replace").translate(_BREAKS).decode("utf-8", "replace").split()
        hits: dict[int, int] = {}
        present = set(words)
        for word in self._vocab.intersection(present):
            for i in self._words[word]:
                hits[i] = hits.get(i, 0) + 1
        firsts = self._firsts.intersection(present)
        prefixes = self._prefixes.get(words[0]) if words else None
        if firsts or prefixes:
            norm = " " + " ".join(words) + " "
            for first in firsts:
                for phrase, i in self._phrases[first]:
                    if phrase in norm:
                        hits[i] = hits.get(i, 0) + 1
            for prefix, i in prefixes or ():
                if norm.startswith(prefix):
                    hits[i] = hits.get(i, 0) + 1
        for literal, rx, i in self._patterns:
            # A substring test is ~10x cheaper than a regex scan: run the regex only when its
            # leading literal occurs at all.
            if i not in hits and literal in low and rx.search(low):
                hits[i] = 1
        return hits

    def classify(self, request: LLMRequest) -> Classification:
        """Classify one request."""
        return self.classify_with_matches(request)[0]

    def classify_with_matches(self, request: LLMRequest) -> tuple[Classification, tuple[Rule, ...]]:
        """The classification and the rules that matched (in config order)."""
        score = self.base
        tokens = request.conversation_tokens
        score += min(self.length.weight, self.length.weight * math.log(tokens) / self._log_full)
        hits = self.matches(request.prompt)
        order = sorted(hits)
        min_tier = Tier.LOW
        max_tier = Tier.CRITICAL
        cat_weight: dict[str, float] = {}
        rules = self.rules
        for idx in order:
            rule = rules[idx]
            n = min(hits[idx], 3) if rule.per_hit else 1
            score += rule.weight * n
            if rule.category:
                cat_weight[rule.category] = cat_weight.get(rule.category, 0.0) + abs(rule.weight) * n + 0.01
            if rule.min_tier is not None and rule.min_tier > min_tier:
                min_tier = rule.min_tier
            if rule.max_tier is not None and rule.max_tier < max_tier:
                max_tier = rule.max_tier
        if request.turns > 3:
            score += 0.05
        score = min(1.0, max(0.0, score))
        tier = tier_for_score(score, self.cuts)
        capped = floored = None
        if max_tier < tier:
            tier = capped = max_tier
        if min_tier > tier:
            tier = floored = min_tier
        category = max(cat_weight, key=cat_weight.__getitem__) if cat_weight else self.default_category
        matched = tuple(rules[i] for i in order)
        evidence = Evidence(partial(self._evidence, tokens, hits, order, request.turns, capped, floored))
        return Classification(
            tier=tier, category=category, confidence=self._confidence(score, bool(hits)), score=round(score, 4),
            evidence=evidence, classifier=self.name,
        ), matched

    def _evidence(self, tokens: int, hits: dict[int, int], order: list[int], turns: int, capped: Tier | None,
                  floored: Tier | None) -> list[str]:
        """Length, the rules that matched ('name xN' for several keywords), and any cap or floor applied."""
        out = [f"~{tokens} tokens"]
        for idx in order:
            rule = self.rules[idx]
            n = min(hits[idx], 3) if rule.per_hit else 1
            out.append(rule.name + (f" x{n}" if n > 1 else ""))
        if turns > 3:
            out.append(f"{turns} user turns")
        if capped is not None:
            out.append(f"capped at {capped.name}")
        if floored is not None:
            out.append(f"at least {floored.name}")
        return out

    def _confidence(self, score: float, matched: bool) -> float:
        """Higher the farther the score sits from the nearest cut; lower when no rule matched."""
        gap = min(abs(score - c) for c in self.cuts)
        conf = 0.5 + min(0.45, gap * 3)
        return round(conf if matched else conf * 0.6, 3)
