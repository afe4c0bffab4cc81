"""Build classifier instances from config."""
from __future__ import annotations

from llm_router.catalog import Tier
from llm_router.classify.base import Classifier
from llm_router.classify.rules import LengthScale, Rule, RulesClassifier
from llm_router.config import Config


def rules_classifier(cfg: Config) -> RulesClassifier:
    """The rules classifier from classifiers.rules."""
    rc = cfg.classifiers.rules
    rules = [
        Rule(name=r.name, keywords=tuple(r.keywords), starts_with=tuple(r.starts_with), patterns=tuple(r.patterns), weight=r.weight,
             category=r.category, min_tier=Tier[r.min_tier] if r.min_tier else None,
             max_tier=Tier[r.max_tier] if r.max_tier else None, per_hit=r.per_hit)
        for r in [*rc.rules, *rc.add]
    ]
    return RulesClassifier(rules, cuts=tuple(rc.cuts), length=LengthScale(rc.length.weight, rc.length.full_at_tokens), base=rc.base)


def make_classifier(name: str, cfg: Config, built: dict[str, Classifier]) -> Classifier:
    """A classifier by config name; `built` shares instances already made."""
    if name == "rules":
        return rules_classifier(cfg)
    if name == "semantic":
        from llm_router.classify.semantic import SemanticClassifier

        return SemanticClassifier.from_config(cfg.classifiers.semantic)
    if name == "learned":
        from llm_router.classify.learned import LearnedClassifier

        return LearnedClassifier.load(cfg.classifiers.learned.model, aliases=cfg.classifiers.learned.aliases)
    if name == "hybrid":
        from llm_router.classify.hybrid import HybridClassifier

        rules = built.get("rules") or built.setdefault("rules", rules_classifier(cfg))
        semantic = built.get("semantic") or built.setdefault("semantic", make_classifier("semantic", cfg, built))
        return HybridClassifier(rules, semantic)
    if name == "none":
        from llm_router.classify.fixed import FixedClassifier

        return FixedClassifier()
    raise ValueError(f"unknown classifier {name!r}")
