"""The agreement cascade replayed on recorded answers, and its configuration chosen on training rows.

A configuration is what a `cascade` policy with `scorer: agree` runs: the first `quorum` models of
its chain answer at once; an answer they all share is returned (the cheapest model's); else the
next models answer one at a time until `quorum` final answers agree; the last model's answer stands.
Each row pays every call made. One configuration per answer kind (option letters by number of
options, number, code, text: read from the prompt, as the runtime can), picked on training rows as
the cheapest combination reaching a share of the best single model's training quality.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from llm_router.classify.answer_kind import DEFAULT, policy_kind
from llm_router.learn.operating import frontier_of
from llm_router.orchestrate.agreement import final_answer

NONE = -1  # no final answer in a response (or no response)


@dataclass(frozen=True, slots=True)
class AgreeConfig:
    """One agreement cascade over model indices: `chain[:quorum]` asked at once, the rest one by one."""

    chain: tuple[int, ...]
    quorum: int  # 1: a single model, no agreement asked

    def describe(self, models: tuple[str, ...]) -> str:
        names = [models[j].rsplit("/", 1)[-1] for j in self.chain]
        if self.quorum == 1:
            return names[0]
        first, rest = names[: self.quorum], names[self.quorum:]
        return f"agree({' + '.join(first)}) -> " + " -> ".join(rest)


@dataclass(frozen=True, slots=True)
class Replay:
    """Per row: the model whose answer is returned, what every call made cost, and how many calls."""

    choice: np.ndarray
    cost: np.ndarray
    calls: np.ndarray
    escalated: np.ndarray  # bool: the first stage did not settle it


def row_kind(prompt: str) -> str:
    """The answer kind a configuration is chosen for: 'choice:<n options>', 'number', 'code' or 'text'.

    The very function the cascade strategy keys `params.kinds` by, so a deployed policy runs each
    request through the configuration the replay chose for its row.
    """
    return policy_kind(prompt)


def policy_params(chosen: dict[str, AgreeConfig], models: tuple[str, ...], fallback: AgreeConfig) -> dict:
    """Cascade policy params running `chosen` (kind -> configuration); `fallback` for any other kind ('default')."""
    def entry(cfg: AgreeConfig) -> dict:
        return {"chain": [models[j] for j in cfg.chain], "quorum": cfg.quorum}

    kinds = {kind: entry(cfg) for kind, cfg in sorted(chosen.items())}
    kinds[DEFAULT] = entry(fallback)
    return {"scorer": "agree", "kinds": kinds}


def answer_codes(responses: list[list[str | None]], prompts: list[str]) -> np.ndarray:
    """(rows, models) ints: equal within a row when the final answers are equal; NONE when there is none."""
    out = np.full((len(responses), len(responses[0]) if responses else 0), NONE, np.int64)
    for i, (row, prompt) in enumerate(zip(responses, prompts)):
        ids: dict[str, int] = {}
        for j, text in enumerate(row):
            f = final_answer(text, prompt)
            if f is not None:
                out[i, j] = ids.setdefault(f, len(ids))
    return out


def replay(cfg: AgreeConfig, codes: np.ndarray, costs: np.ndarray) -> Replay:
    """The configuration on these rows (vectorised `settle`): returned model, cost of every call, calls."""
    n = len(codes)
    chain = cfg.chain
    if cfg.quorum == 1:
        j = chain[0]
        return Replay(np.full(n, j), costs[:, j].copy(), np.ones(n), np.zeros(n, bool))
    q = cfg.quorum
    first = list(chain[:q])
    cost = costs[:, first].sum(1)
    calls = np.full(n, float(q))
    c0 = codes[:, first[0]]
    agree = c0 != NONE
    for j in first[1:]:
        agree &= codes[:, j] == c0
    choice = np.where(agree, first[0], -1)
    done = agree.copy()
    asked = list(first)
    rest = chain[q:]
    for t in rest:
        live = ~done
        cost[live] += costs[live, t]
        calls[live] += 1
        ct = codes[:, t]
        same = (codes[:, asked] == ct[:, None]) & (ct[:, None] != NONE)
        hit = live & (same.sum(1) >= q - 1)  # this answer completes a quorum: the cheapest sharing it is returned
        choice[hit] = np.asarray(asked)[same.argmax(1)][hit]
        done |= hit
        asked.append(t)
    if rest:
        choice[~done] = rest[-1]  # no quorum before the last model: its answer stands
    # Rows no escalation reached (a chain of only the quorum): the cheapest answer.
    choice[choice < 0] = first[0]
    return Replay(choice, cost, calls, ~agree)


def candidates(prices: np.ndarray, *, max_quorum: int = 3) -> list[AgreeConfig]:
    """Every single model; every pair (quorum 2) with one or two models to escalate to; every triple with one."""
    m = len(prices)
    order = sorted(range(m), key=lambda j: (prices[j], j))
    out = [AgreeConfig((j,), 1) for j in order]
    for q in range(2, max_quorum + 1):
        for first in itertools.combinations(order, q):
            rest = [j for j in order if j not in first]
            for e in rest:
                out.append(AgreeConfig(first + (e,), q))
            if q == 2:
                for t, e in itertools.permutations(rest, 2):
                    if prices[t] < prices[e]:
                        out.append(AgreeConfig(first + (t, e), q))
    return out


@dataclass(frozen=True, slots=True)
class Option:
    """A configuration's totals on some rows (sums, not means)."""

    cost: float
    quality: float
    config: AgreeConfig


def frontier(options: list[Option]) -> list[Option]:
    """Options no other option beats on both total cost and total quality, by ascending cost."""
    return frontier_of(options, lambda o: o.cost, lambda o: o.quality, eps=1e-9)


def kind_frontiers(codes: np.ndarray, scores: np.ndarray, costs: np.ndarray, kinds: np.ndarray,
                   configs: list[AgreeConfig]) -> dict[str, list[Option]]:
    """Per answer kind, the cost/quality frontier of every configuration on these rows.

    Agreement needs comparable final answers: code and free text rarely agree, so those kinds
    are offered single models only (an agreement there would almost always escalate).
    """
    out: dict[str, list[Option]] = {}
    for kind in sorted(set(kinds.tolist())):
        rows = np.nonzero(kinds == kind)[0]
        c, s, k = codes[rows], scores[rows], costs[rows]
        opts = []
        for cfg in configs:
            if cfg.quorum > 1 and not (kind.startswith("choice") or kind == "number"):
                continue
            r = replay(cfg, c, k)
            opts.append(Option(float(r.cost.sum()), float(s[np.arange(len(rows)), r.choice].sum()), cfg))
        out[kind] = frontier(opts)
    return out


def cheapest_combination(fronts: dict[str, list[Option]], quality_needed: float) -> dict[str, AgreeConfig]:
    """One configuration per kind: the cheapest whose total quality reaches `quality_needed` (else the best quality)."""
    combined: list[tuple[float, float, tuple[AgreeConfig, ...]]] = [(0.0, 0.0, ())]
    kinds = sorted(fronts)
    for kind in kinds:
        merged = [(c + o.cost, q + o.quality, picks + (o.config,)) for c, q, picks in combined for o in fronts[kind]]
        merged.sort(key=lambda t: (t[0], -t[1]))
        combined = []
        for item in merged:
            if not combined or item[1] > combined[-1][1] + 1e-9:
                combined.append(item)
    ok = [t for t in combined if t[1] >= quality_needed - 1e-9]
    pick = min(ok, key=lambda t: (t[0], -t[1])) if ok else max(combined, key=lambda t: (t[1], -t[0]))
    return dict(zip(kinds, pick[2]))


MARGINS = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.03)


@dataclass(frozen=True, slots=True)
class Part:
    """Rows a choice is made on: their frontiers per kind and their best single model's total quality."""

    fronts: dict[str, list[Option]]
    best_total: float
    best: int

    @classmethod
    def of(cls, codes: np.ndarray, scores: np.ndarray, costs: np.ndarray, kinds: np.ndarray) -> "Part":
        configs = candidates(costs.mean(0))
        means = scores.mean(0)
        return cls(kind_frontiers(codes, scores, costs, kinds, configs), float(means.max() * len(scores)), int(means.argmax()))

    def pick(self, share: float) -> dict[str, AgreeConfig]:
        return cheapest_combination(self.fronts, share * self.best_total)


def choose(codes: np.ndarray, scores: np.ndarray, costs: np.ndarray, kinds: np.ndarray, frac: float) -> dict[str, AgreeConfig]:
    """Per kind, the configuration to run: cheapest reaching `frac` of the best single model's quality on these rows."""
    return Part.of(codes, scores, costs, kinds).pick(frac)


def margins_by_inner_cv(codes: np.ndarray, scores: np.ndarray, costs: np.ndarray, kinds: np.ndarray, inner: np.ndarray,
                        fracs: tuple[float, ...]) -> dict[float, float]:
    """Per target, the smallest margin added to it at choice time that still reaches it on inner held-out rows.

    A configuration picked to just reach the target on the rows it was picked on tends to fall a
    little short on new rows; inner cross-validation on the training rows measures how much to add.
    """
    n = len(codes)
    got = {(f, m): np.zeros(n) for f in fracs for m in MARGINS}
    best_pooled = np.zeros(n)
    for g in np.unique(inner):
        te, tr = np.nonzero(inner == g)[0], np.nonzero(inner != g)[0]
        part = Part.of(codes[tr], scores[tr], costs[tr], kinds[tr])
        fallback = AgreeConfig((part.best,), 1)
        best_pooled[te] = scores[te, part.best]
        for f in fracs:
            for m in MARGINS:
                r = apply(part.pick(f + m), codes[te], costs[te], kinds[te], fallback)
                got[(f, m)][te] = scores[te, r.choice]
    out = {}
    for f in fracs:
        need = f * best_pooled.mean() - 1e-12
        out[f] = next((m for m in MARGINS if got[(f, m)].mean() >= need), MARGINS[-1])
    return out


def apply(chosen: dict[str, AgreeConfig], codes: np.ndarray, costs: np.ndarray, kinds: np.ndarray,
          fallback: AgreeConfig) -> Replay:
    """Each row through its kind's configuration (`fallback` for a kind the choice never saw)."""
    n = len(codes)
    choice, cost, calls, up = np.zeros(n, int), np.zeros(n), np.zeros(n), np.zeros(n, bool)
    for kind in set(kinds.tolist()):
        rows = np.nonzero(kinds == kind)[0]
        r = replay(chosen.get(kind, fallback), codes[rows], costs[rows])
        choice[rows], cost[rows], calls[rows], up[rows] = r.choice, r.cost, r.calls, r.escalated
    return Replay(choice, cost, calls, up)


@dataclass(frozen=True, slots=True)
class HeldOut:
    """The agreement cascade over all rows, each row run with the configuration chosen without it."""

    replay: Replay
    chosen: list[dict[str, str]]  # per fold: kind -> configuration (readable)
    margins: list[float]  # per fold: what inner cross-validation added to the target


def cross_validate(codes: np.ndarray, scores: np.ndarray, costs: np.ndarray, kinds: np.ndarray, fids: np.ndarray,
                   fracs: tuple[float, ...], models: tuple[str, ...], inner: np.ndarray | None = None) -> dict[float, HeldOut]:
    """Per fold: choose on the other folds' rows (their prices, their best single model), replay the fold's rows.

    `inner`: inner fold ids (not aligned with `fids`) to size each target's margin on the training rows; None: no margin.
    """
    n = len(codes)
    acc = {f: (np.zeros(n, int), np.zeros(n), np.zeros(n), np.zeros(n, bool), [], []) for f in fracs}
    for fold in np.unique(fids):
        te, tr = np.nonzero(fids == fold)[0], np.nonzero(fids != fold)[0]
        part = Part.of(codes[tr], scores[tr], costs[tr], kinds[tr])
        margins = (margins_by_inner_cv(codes[tr], scores[tr], costs[tr], kinds[tr], inner[tr], fracs)
                   if inner is not None and len(np.unique(inner[tr])) > 1 else {f: 0.0 for f in fracs})
        fallback = AgreeConfig((part.best,), 1)
        for f in fracs:
            picked = part.pick(f + margins[f])
            r = apply(picked, codes[te], costs[te], kinds[te], fallback)
            choice, cost, calls, up, chosen, used = acc[f]
            choice[te], cost[te], calls[te], up[te] = r.choice, r.cost, r.calls, r.escalated
            chosen.append({k: v.describe(models) for k, v in sorted(picked.items())})
            used.append(margins[f])
    return {f: HeldOut(Replay(*acc[f][:4]), acc[f][4], acc[f][5]) for f in fracs}
