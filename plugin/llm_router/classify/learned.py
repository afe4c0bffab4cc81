"""Learned classifier: per-model probability of a good answer, from a model file made by `llm-router train`.

The quality_gate strategy turns the probabilities into a choice (cheapest model over a bar, or
the best quality-minus-price trade-off). Tier comes from the predicted difficulty (1 - the
best probability), category from cheap cues in the prompt.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from llm_router.catalog import Tier
from llm_router.classify.base import Classification, tier_for_score
from llm_router.learn.features import Featurizer, load_embedder
from llm_router.learn.model import ModelFileError, QualityModel
from llm_router.request import LLMRequest

DIFFICULTY_CUTS = (0.15, 0.3, 0.5)  # 1 - best predicted probability -> tier
# Cheap category cues: plain substring tests on the lower-cased head of the prompt.
_CATEGORY_CUES = (
    ("code", ("```", "def ", "function", "class ", "python", "javascript", " sql", " code")),
    ("math", ("equation", "solve", "calculate", "probability", "integral", "compute")),
    ("extraction", ("extract", "summarize", "summarise", "json", "classify")),
    ("creative", ("poem", "story", "song", "haiku")),
    ("reasoning", ("why", "explain", "which of the following", "answer:")),
)
_ARITH = re.compile(r"\d\s*[-+*/^=]\s*\d")


def category_of(text: str) -> str:
    """First category whose cue appears in the prompt's head; 'chat' otherwise."""
    head = text[:1500].lower()
    for name, cues in _CATEGORY_CUES:
        if any(c in head for c in cues) or (name == "math" and _ARITH.search(head)):
            return name
    return "chat"


class LearnedClassifier:
    """Classification with `quality` = ((catalog model id, p), ...) from a trained QualityModel."""

    name = "learned"

    def __init__(self, model: QualityModel, featurizer: Featurizer, aliases: dict[str, str] | None = None,
                 cuts: tuple[float, float, float] = DIFFICULTY_CUTS):
        if featurizer.fingerprint() != model.features:
            raise ModelFileError(f"model was trained with features {model.features!r}, but this install computes "
                                 f"{featurizer.fingerprint()!r}; retrain with `llm-router train`")
        self.model = model
        self.featurizer = featurizer
        aliases = aliases or {}
        self.ids = tuple(aliases.get(m, m) for m in model.models)
        self.cuts = cuts

    @classmethod
    def load(cls, path: str | Path | None, *, aliases: dict[str, str] | None = None,
             embeddings: str | Path | None = None) -> "LearnedClassifier":
        """From a model file; the featurizer it was trained with is rebuilt (and checked)."""
        if not path:
            raise ModelFileError("classifiers.learned.model: no model file given (make one with `llm-router train`)")
        model = QualityModel.load(path)
        kind = str(model.meta.get("embedder", model.features.split("-", 1)[0]))
        try:
            embedder = load_embedder(kind, embeddings)
        except (FileNotFoundError, ValueError) as exc:
            raise ModelFileError(f"{path}: {exc}") from None
        return cls(model, Featurizer(kind, embedder), aliases)

    def predict(self, request: LLMRequest) -> np.ndarray:
        """Probability of a good answer per model (in model file order)."""
        return self.model.predict(self.featurizer.features(request))

    def classify(self, request: LLMRequest) -> Classification:
        """Classify one request; its label is the task the model's recogniser sees in it (None without one)."""
        x = self.featurizer.features(request)
        task = self.model.task_of(x)
        return self.from_probabilities(request, self.model.predict(x), self.model.tasks[task] if task >= 0 else None)

    def from_probabilities(self, request: LLMRequest, p: np.ndarray, task: str | None = None) -> Classification:
        """The Classification for already computed probabilities (eval reuses them) and recognised task."""
        best = float(p.max()) if len(p) else 0.0
        difficulty = 1.0 - best
        tier = tier_for_score(difficulty, self.cuts)
        # Confidence: how far the difficulty sits from the nearest tier boundary, scaled to 0..1.
        margin = min(abs(difficulty - c) for c in self.cuts)
        order = np.argsort(-p)[:3]
        evidence = tuple(f"p({self.ids[i]})={p[i]:.2f}" for i in order)
        return Classification(
            tier=tier, category=category_of(request.prompt), confidence=min(1.0, 0.5 + 2 * margin), score=difficulty,
            evidence=((f"task {task}",) if task else ()) + evidence, classifier=self.name,
            quality=tuple((mid, float(pi)) for mid, pi in zip(self.ids, p)), label=task,
        )


__all__ = ["LearnedClassifier", "ModelFileError", "Tier", "category_of"]
