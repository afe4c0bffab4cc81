"""Hybrid classifier: semantic judgement, bounded by the rules' hard floors and caps."""
from __future__ import annotations

from functools import partial

from llm_router.classify.base import Classification, Evidence, tier_for_score
from llm_router.classify.rules import Rule, RulesClassifier
from llm_router.classify.semantic import SemanticClassifier
from llm_router.request import LLMRequest


class HybridClassifier:
    """Semantic tier with the rules as tie-breaker, floor/cap, and fallback when semantic is unsure.

    1. score = (1 - rules_share) * semantic score + rules_share * rules score (mapped so the
       rules' cuts fall on the semantic cuts); the tier is that score cut at the semantic cuts. Semantic dominates; the rules move prompts that sit near
       a cut (a long prompt full of code words tips up, a greeting tips down).
    2. When semantic is unsure (no close example, or split neighbours: confidence below
       `unsure`) and the rules matched keywords with confidence at least `sure`, the rules' tier
       and category win.
    3. Rules with min_tier/max_tier that matched are hard limits from config: caps apply, then
       floors (a floor wins over a cap, as in the rules classifier).
    Category and archetype label come from semantic except in case 2. Every step that changed
    the outcome is named in the evidence.
    """

    name = "hybrid"

    def __init__(self, rules: RulesClassifier, semantic: SemanticClassifier, *, rules_share: float = 0.1,
                 sure: float = 0.9, unsure: float = 0.2):
        self.rules = rules
        self.semantic = semantic
        self.rules_share = rules_share
        self.sure = sure
        self.unsure = unsure
        self.cuts = semantic.cuts

    def _on_semantic_scale(self, score: float) -> float:
        """A rules score mapped piecewise-linearly so the rules' cuts land on the semantic cuts."""
        src = (0.0, *self.rules.cuts, 1.0)
        dst = (0.0, *self.cuts, 1.0)
        for i in range(1, len(src)):
            if score <= src[i] or i == len(src) - 1:
                lo, hi = src[i - 1], src[i]
                t = (score - lo) / (hi - lo) if hi > lo else 0.0
                return dst[i - 1] + min(1.0, max(0.0, t)) * (dst[i] - dst[i - 1])
        return score

    def classify(self, request: LLMRequest) -> Classification:
        """Classify one request."""
        r, matched = self.rules.classify_with_matches(request)
        s = self.semantic.classify(request)
        score = round((1.0 - self.rules_share) * s.score + self.rules_share * self._on_semantic_scale(r.score), 4)
        tier = tier_for_score(score, self.cuts)
        category, label, confidence = s.category, s.label, s.confidence
        # What changed the outcome, in order; formatted only when the evidence is read.
        steps: list[str] = []
        if s.confidence < self.unsure and matched and r.confidence >= self.sure:
            tier, category = r.tier, r.category
            confidence = r.confidence
            steps.append(f"semantic unsure, rules sure: {r.tier.name} {r.category}")
        else:
            if tier != s.tier:
                steps.append(f"rules score moved {s.tier.name} -> {tier.name} (blended score {score:.2f})")
            # Agreement raises confidence, disagreement lowers it.
            confidence = min(1.0, confidence + 0.1) if r.tier == tier else confidence * 0.85
        caps = [x.max_tier for x in matched if x.max_tier is not None]
        floors = [x.min_tier for x in matched if x.min_tier is not None]
        if caps and min(caps) < tier:
            tier = min(caps)
            steps.append(f"capped at {tier.name} by rule {next(x.name for x in matched if x.max_tier == tier)}")
        if floors and max(floors) > tier:
            tier = max(floors)
            steps.append(f"at least {tier.name} by rule {next(x.name for x in matched if x.min_tier == tier)}")
        return Classification(tier=tier, category=category, confidence=round(confidence, 3), score=score,
                              evidence=Evidence(partial(_evidence, r, s, matched, steps)), classifier=self.name, label=label)


def _evidence(r: Classification, s: Classification, matched: tuple[Rule, ...], steps: list[str]) -> tuple[str, ...]:
    """Both verdicts first (a reason shows the first three items), then what changed, then semantic's neighbours."""
    return (f"semantic {s.tier.name} {s.category} (conf {s.confidence:.2f}, score {s.score:.2f})",
            f"rules {r.tier.name} {r.category} (conf {r.confidence:.2f}, score {r.score:.2f})"
            + (f": {', '.join(x.name for x in matched)}" if matched else ""),
            *steps, *s.evidence[:3])

