"""Value classes with their __init__ written out (for mypyc) take exactly their fields, with the fields' defaults."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from llm_router.classify.base import Classification
from llm_router.classify.semantic import _Vote
from llm_router.decision import Decision
from llm_router.gateways.apisix.decode import ReqCall
from llm_router.gateways.apisix.runner import Pending
from llm_router.plan import UpstreamCall
from llm_router.request import LLMRequest, Needs
from llm_router.runtime import Exchange

CLASSES = [Needs, LLMRequest, Decision, Exchange, Classification, UpstreamCall, _Vote, Pending, ReqCall]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_the_written_init_matches_the_fields(cls):
    fields = dataclasses.fields(cls)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert [p.name for p in params] == [f.name for f in fields]  # a field added without its parameter fails here
    required = {}
    for f, p in zip(fields, params):
        if f.default is not dataclasses.MISSING:
            assert p.default == f.default, f.name
        elif f.default_factory is not dataclasses.MISSING:
            assert p.default is None, f.name  # None stands for a fresh default
        else:
            assert p.default is inspect.Parameter.empty, f.name
            required[f.name] = object()
    made = cls(**required)
    for f in fields:  # every field is set: to the argument, or to the field's default
        want = required[f.name] if f.name in required else (
            f.default if f.default is not dataclasses.MISSING else f.default_factory())
        assert getattr(made, f.name) == want, f.name
    assert dataclasses.replace(made) == made
