"""Classifiers: request -> tier, category, complexity score, confidence and evidence."""

from llm_router.classify.base import CATEGORIES, Classification, Classifier

__all__ = ["CATEGORIES", "Classification", "Classifier"]
