"""Fake LLM providers for the demo, tests and benchmarks (OpenAI-compatible and Anthropic APIs)."""
from llm_router.fakes.providers import Behaviour, FakeProvider, Recorded, fake_key
from llm_router.fakes.runner import FakeProviders

__all__ = ["Behaviour", "FakeProvider", "FakeProviders", "Recorded", "fake_key"]
