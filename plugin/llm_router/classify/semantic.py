"""Semantic classifier: embed the prompt, compare with labelled examples (k nearest or centroids)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np
import orjson

from llm_router.catalog import Tier
from llm_router.classify import native
from llm_router.classify.base import CATEGORIES, Classification, Evidence, tier_for_score
from llm_router.config import ConfigError, SemanticConf
from llm_router.request import LLMRequest

TIERS = (Tier.LOW, Tier.MEDIUM, Tier.HIGH, Tier.CRITICAL)
_TIER_NAMES = {t.name: t for t in TIERS}
_FIELDS = ("text", "tier", "category", "label")
SHORT_PROMPT_CHARS = 40  # shorter prompts ("yes, in Rust please") borrow meaning from the context
CONTEXT_WEIGHT = 0.5
MAX_PROBLEMS = 10


class Embedder(Protocol):
    """What the classifier needs of an embedding backend."""

    dim: int

    def embed(self, text: str) -> np.ndarray: ...

    def embed_many(self, texts: Iterable[str]) -> np.ndarray: ...


@dataclass(slots=True, init=False)
class _Vote:
    """One text's softmax vote: summed columns of `_votes`, the centred similarities, the nearest example."""

    votes: list[float]
    s: np.ndarray
    best_i: int
    best_raw: float
    inv: float

    def __init__(self, votes: list[float], s: np.ndarray, best_i: int, best_raw: float, inv: float) -> None:
        # written out (init=False) so that mypyc compiles it: dataclass-made __init__s stay interpreted
        self.votes = votes
        self.s = s
        self.best_i = best_i
        self.best_raw = best_raw
        self.inv = inv


def _aligned(a: np.ndarray, align: int = 64) -> np.ndarray:
    """A copy of a C-contiguous array that starts on a cache line (numpy guarantees 16 bytes): the C vote's
    32-byte loads then never straddle two lines."""
    buf = np.empty(a.nbytes + align, np.uint8)
    start = -int(buf.ctypes.data) % align
    out: np.ndarray = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


_UNSEEN = _Vote([], np.zeros(0, np.float32), -1, 0.0, 0.0)  # a memo miss (None is a remembered text-less vote)


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled example prompt."""

    text: str
    tier: Tier
    category: str
    label: str


def parse_examples(lines: Iterable[str], source: str = "examples") -> list[Example]:
    """Examples from JSONL lines; raises ConfigError naming each bad line."""
    out: list[Example] = []
    problems: list[str] = []
    for n, line in enumerate(lines, 1):
        if len(problems) >= MAX_PROBLEMS:
            problems.append("... (stopped after the first problems)")
            break
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            problems.append(f"line {n}: not valid JSON ({exc})")
            continue
        if not isinstance(row, dict):
            problems.append(f"line {n}: must be a JSON object with {', '.join(_FIELDS)}")
            continue
        bad = []
        extra = sorted(set(row) - set(_FIELDS))
        if extra:
            bad.append(f"unknown field(s) {extra}")
        missing = [f for f in _FIELDS if f not in row]
        if missing:
            bad.append(f"missing field(s) {missing}")
        text, tier, category, label = (row.get(f) for f in _FIELDS)
        if "text" in row and (not isinstance(text, str) or not text.strip()):
            bad.append("text must be a non-empty string")
        if "tier" in row and (not isinstance(tier, str) or tier.upper() not in _TIER_NAMES):
            bad.append(f"tier must be one of {list(_TIER_NAMES)}, got {tier!r}")
        if "category" in row and category not in CATEGORIES:
            bad.append(f"category must be one of {list(CATEGORIES)}, got {category!r}")
        if "label" in row and (not isinstance(label, str) or not label.strip()):
            bad.append("label must be a non-empty string")
        if bad:
            problems.append(f"line {n}: " + "; ".join(bad))
            continue
        assert isinstance(text, str) and isinstance(tier, str) and isinstance(category, str) and isinstance(label, str)
        out.append(Example(text=text, tier=_TIER_NAMES[tier.upper()], category=category, label=label.strip()))
    if not problems and not out:
        problems.append("no examples (expected JSON lines with text, tier, category, label)")
    if problems:
        raise ConfigError(problems, source)
    return out


def load_examples(path: str | Path | None = None) -> list[Example]:
    """Examples from a JSONL file, or the built-in set when path is None."""
    if path is None:
        text = resources.files("llm_router").joinpath("data/examples.jsonl").read_text(encoding="utf-8")
        return parse_examples(text.splitlines(), "built-in examples")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read examples file: {getattr(exc, 'strerror', None) or exc}"],
                          f"classifiers.semantic.examples ({p})") from None
    return parse_examples(text.splitlines(), f"classifiers.semantic.examples ({p})")


def make_embedder(backend: str) -> Embedder:
    """The embedding backend named in config."""
    if backend == "static":
        from llm_router.classify.embeddings import load_default

        return load_default()
    if backend == "onnx":
        from llm_router.classify.onnx_backend import load_onnx

        return load_onnx()
    raise ConfigError([f"backend: unknown embedding backend {backend!r} (known: static, onnx)"], "classifiers.semantic")


class SemanticClassifier:
    """Tier, category and archetype from the labelled examples nearest to the prompt.

    Vectors are centred on the examples' mean, then compared by cosine.
    knn mode: the k most similar examples vote, each weighted by exp((sim - best) / temperature).
    centroid mode: the same vote over per-archetype centroids (mean of an archetype's examples,
    carrying their mean tier and majority category): smoother, cheaper with many examples.
    Score = (1 - length_weight) * weighted mean tier of the voters (LOW=0 .. CRITICAL=1)
    + length_weight * log-length term; the tier is the score cut at `cuts`; category and
    archetype label are weighted votes. Confidence = vote share of voters within half a tier of
    the chosen tier, times how close the nearest example is.
    """

    name = "semantic"

    def __init__(self, examples: list[Example], embedder: Embedder, *, k: int = 10,
                 cuts: tuple[float, ...] = (0.2, 0.5, 0.7), mode: str = "knn",
                 temperature: float = 0.05, length_weight: float = 0.2, full_at_tokens: int = 3000, center: bool = True,
                 memo: int = 0):
        if not examples:
            raise ValueError("the semantic classifier needs at least one example")
        if mode not in ("knn", "centroid"):
            raise ValueError(f"mode must be 'knn' or 'centroid', got {mode!r}")
        self.examples = tuple(examples)
        self.embedder = embedder
        self.cuts = tuple(cuts)
        self.mode = mode
        self.temperature = temperature
        self.length_weight = length_weight
        self._log_full = math.log(max(2, full_at_tokens))
        self.labels = tuple(sorted({e.label for e in examples}))
        label_ix = {lab: i for i, lab in enumerate(self.labels)}
        cat_ix = {c: i for i, c in enumerate(CATEGORIES)}
        raw = embedder.embed_many(e.text for e in examples).astype(np.float32)
        # Static embeddings share a large common direction (every mean of token vectors leans the
        # same way), which squeezes all cosines into 0.5..0.9. Centring on the examples' mean
        # spreads them out so that neighbours are found by topic, not by text length.
        self._mean = raw.mean(0) if center else np.zeros(raw.shape[1], np.float32)
        vectors = self._unit(raw - self._mean)
        tiers = np.array([TIERS.index(e.tier) for e in examples], np.float32)
        cats = np.array([cat_ix[e.category] for e in examples], np.intp)
        labs = np.array([label_ix[e.label] for e in examples], np.intp)
        if mode == "knn":
            self._vectors, self._tier, self._cat, self._lab = vectors, tiers, cats, labs
        else:
            cents, ctier, ccat = [], [], []
            for i in range(len(self.labels)):
                members = labs == i
                c = vectors[members].sum(0)
                cents.append(c / max(float(np.linalg.norm(c)), 1e-9))
                ctier.append(float(tiers[members].mean()))
                ccat.append(int(np.bincount(cats[members], minlength=len(CATEGORIES)).argmax()))
            self._vectors = np.array(cents, np.float32)
            self._tier = np.array(ctier, np.float32)
            self._cat = np.array(ccat, np.intp)
            self._lab = np.arange(len(self.labels), dtype=np.intp)
        self.k = max(1, min(k, len(self._vectors)))
        self._vec_mean = (self._vectors @ self._mean).astype(np.float32)
        self._mean_sq = float(self._mean @ self._mean)
        # Softmax over every example or centroid (k >= their number): one matrix product gives all
        # the votes. Columns: tier, one per category, total weight, one per tier (voters within half a
        # tier of it, for the confidence).
        n = len(self._vectors)
        self._soft = self.k >= n
        if self._soft:
            cat_hot = np.zeros((n, len(CATEGORIES)), np.float32)
            cat_hot[np.arange(n), self._cat] = 1.0
            within = np.stack([np.abs(self._tier - t) <= 0.5 for t in range(len(TIERS))], 1).astype(np.float32)
            self._votes = np.column_stack([self._tier, cat_hot, np.ones(n, np.float32), within]).astype(np.float32)
            self._with_mean = _aligned(np.vstack([self._vectors, self._mean[None, :]]).astype(np.float32))
            self._votes_t = _aligned(np.ascontiguousarray(self._votes.T))  # one row per column: the C vote's layout
        self.kernels: Any = native.KERNELS if self._soft and self._votes.shape[1] <= native.MAX_VOTE_COLUMNS else None
        # Votes of recently seen texts: every call of an agent's tool loop carries the same instruction (the
        # tool results come after it), so the loop's later calls skip the embedding and the vote. Only the
        # length term, which grows with the loop, is computed again. Bounded: emptied when full.
        self.memo_size = max(0, memo) if self._soft else 0
        self._memo: dict[str, _Vote | None] = {}
        self.memo_hits = 0
        self._tier_list = self._tier.tolist()
        self._cat_list = self._cat.tolist()
        self._lab_list = self._lab.tolist()
        self._names = [f"{self.labels[lab]}/{TIERS[int(round(t))].name}" for lab, t in zip(self._lab_list, self._tier_list)]

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        norm = np.linalg.norm(x, axis=-1, keepdims=True)
        return (x / np.maximum(norm, 1e-9)).astype(np.float32)

    @classmethod
    def from_config(cls, conf: SemanticConf, embedder: Embedder | None = None) -> "SemanticClassifier":
        """Build from classifiers.semantic (examples file, backend, k, cuts, mode)."""
        examples = load_examples(conf.examples)
        embedder = embedder or make_embedder(conf.backend)
        return cls(examples, embedder, k=conf.k, cuts=tuple(conf.cuts), mode=conf.mode,
                   temperature=conf.temperature, length_weight=conf.length_weight, memo=conf.memo)

    def embed_request(self, request: LLMRequest) -> np.ndarray:
        """The prompt's vector (zero if it has no text); a very short prompt is blended with its context."""
        v = self.embedder.embed(request.prompt)
        if request.context and len(request.prompt) < SHORT_PROMPT_CHARS:
            v = v + CONTEXT_WEIGHT * self.embedder.embed(request.context[-1000:])
        return v

    def _classify_soft(self, v: np.ndarray, tokens: int) -> Classification:
        """Voting over all examples or centroids with softmax weights: few numpy calls (each costs microseconds)."""
        vote = self._vote(v)
        return self._no_text() if vote is None else self._verdict(vote, tokens)

    def _vote(self, v: np.ndarray) -> _Vote | None:
        """The softmax vote of every example or centroid for a vector (None: no text to compare)."""
        if self.kernels is not None:
            if v.dtype != np.float32 or not v.flags.c_contiguous:  # other embedders' float64, a strided view
                v = np.ascontiguousarray(v, np.float32)
            s = np.empty(len(self._vec_mean), np.float32)
            got = self.kernels.vote(v, self._with_mean, self._vec_mean, self._mean_sq, self._votes_t,
                                    1.0 / self.temperature, s)
            return None if got is None else _Vote(got[0], s, got[1], got[2], got[3])
        vv = float(v @ v)
        raw = self._with_mean @ v
        norm2 = vv - 2.0 * float(raw[-1]) + self._mean_sq
        if vv <= 1e-12 or norm2 <= 1e-12:
            return None
        inv = 1.0 / math.sqrt(norm2)
        s = raw[:-1] - self._vec_mean  # centred cosines times |v - mean|
        best_i = int(s.argmax())
        best_raw = float(s[best_i])
        weights = np.exp((s - best_raw) * (inv / self.temperature))
        return _Vote((weights @ self._votes).tolist(), s, best_i, best_raw, inv)

    def _no_text(self) -> Classification:
        return Classification(tier=TIERS[0], category="chat", confidence=0.0, score=0.0,
                              evidence=("no text to compare",), classifier=self.name, label=None)

    def _verdict(self, vote: _Vote, tokens: int) -> Classification:
        """The classification from a vote and the conversation's length."""
        votes = vote.votes
        n_cat = len(CATEGORIES)
        total = votes[1 + n_cat]
        mean_tier = votes[0] / total
        length = min(1.0, math.log(tokens) / self._log_full)
        score = min(1.0, max(0.0, (1.0 - self.length_weight) * mean_tier / 3.0 + self.length_weight * length))
        tier = tier_for_score(score, self.cuts)
        cat_votes = votes[1:1 + n_cat]
        category = CATEGORIES[cat_votes.index(max(cat_votes))]
        agree = votes[2 + n_cat + tier]  # TIERS holds the tiers in the order of their values
        best = vote.best_raw * vote.inv
        closeness = min(1.0, max(0.3, (best - 0.15) / 0.4))
        return Classification(
            tier=tier, category=category, confidence=round(agree / total * closeness, 3), score=round(score, 4),
            evidence=Evidence(partial(self._soft_evidence, vote.s, vote.inv, mean_tier, tokens)), classifier=self.name,
            label=self.labels[self._lab_list[vote.best_i]],
        )

    def _soft_evidence(self, s: np.ndarray, inv: float, mean_tier: float, tokens: int) -> tuple[str, ...]:
        """The three nearest examples or centroids and the vote's summary."""
        top = np.argpartition(s, -3)[-3:].tolist() if len(s) > 3 else list(range(len(s)))
        top.sort(key=lambda i: -float(s[i]))
        names = self._names
        return (*(f"{names[i]} {float(s[i]) * inv:.2f}" for i in top),
                f"{self.mode} k={len(s)} (softmax): mean tier {mean_tier:.2f}, ~{tokens} tokens")

    def classify(self, request: LLMRequest) -> Classification:
        """Classify one request."""
        if not self.memo_size:
            return self.classify_vector(self.embed_request(request), request.conversation_tokens)
        prompt = request.prompt
        key = prompt if not (request.context and len(prompt) < SHORT_PROMPT_CHARS) else (
            prompt + "\x00" + request.context[-1000:])  # what embed_request embeds
        memo = self._memo
        vote = memo.get(key, _UNSEEN)
        if vote is _UNSEEN:
            vote = self._vote(self.embed_request(request))
            if len(memo) >= self.memo_size:
                memo = self._memo = {}
            memo[key] = vote
        else:
            self.memo_hits += 1
        return self._no_text() if vote is None else self._verdict(vote, request.conversation_tokens)

    def classify_vector(self, v: np.ndarray, tokens: int) -> Classification:
        """Classify an already embedded prompt of `tokens` tokens."""
        if self._soft:
            return self._classify_soft(v, tokens)
        # Centred cosine without building the centred vector: V.(v - m) / |v - m|.
        vm = float(v @ self._mean)
        norm2 = float(v @ v) - 2.0 * vm + self._mean_sq
        if norm2 <= 1e-12 or not v.any():
            return Classification(tier=TIERS[0], category="chat", confidence=0.0, score=0.0,
                                  evidence=("no text to compare",), classifier=self.name, label=None)
        sims = (self._vectors @ v - self._vec_mean) / math.sqrt(norm2)
        k = self.k
        top = np.argpartition(sims, -k)[-k:] if k < len(sims) else np.arange(len(sims))
        top = top[np.argsort(-sims[top], kind="stable")]
        near = sims[top]
        best = float(near[0])
        weights = np.exp((near - best) / self.temperature)
        total = float(weights.sum())
        tiers = self._tier[top]
        mean_tier = float(weights @ tiers) / total
        length = min(1.0, math.log(tokens) / self._log_full)
        score = min(1.0, max(0.0, (1.0 - self.length_weight) * mean_tier / 3.0 + self.length_weight * length))
        tier = tier_for_score(score, self.cuts)
        agree = float(weights[np.abs(tiers - TIERS.index(tier)) <= 0.5].sum())
        category = CATEGORIES[int(np.bincount(self._cat[top], weights, minlength=len(CATEGORIES)).argmax())]
        label = self.labels[int(np.bincount(self._lab[top], weights, minlength=len(self.labels)).argmax())]
        # Centred cosines: ~0.3 is a distant match, >= 0.55 a close one.
        closeness = min(1.0, max(0.3, (best - 0.15) / 0.4))
        names = self._names
        ix = top[:3].tolist()
        evidence = (*(f"{names[i]} {sim:.2f}" for i, sim in zip(ix, near[:3].tolist())),
                    f"{self.mode} k={k}: mean tier {mean_tier:.2f}, ~{tokens} tokens")
        return Classification(
            tier=tier, category=category, confidence=round(agree / total * closeness, 3), score=round(score, 4),
            evidence=evidence, classifier=self.name, label=label,
        )
