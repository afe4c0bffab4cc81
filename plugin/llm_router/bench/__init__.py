"""Benchmarks anyone can rerun: decision time, estimator error, Envoy and APISIX overhead."""
from __future__ import annotations

import copy
from typing import Any


def without_memo(data: dict[str, Any]) -> dict[str, Any]:
    """A config with the semantic classifier's memo off (`classifiers.semantic.memo: 0`).

    The speed benchmarks repeat one or a few bodies, whose classification the memo would answer from
    memory after the first: they measure the path every new prompt takes. (`bench decision` measures
    the memo separately, on agent loops.) The classifiers section replaces the defaults' whole, so it
    starts from the config's own or the built-in one.
    """
    from llm_router.config import default_data

    classifiers = copy.deepcopy(data.get("classifiers") or default_data()["classifiers"])
    classifiers["semantic"] = {**(classifiers.get("semantic") or {}), "memo": 0}
    return {**data, "classifiers": classifiers}


def with_classifier(config: str | None, classifier: str | None) -> dict[str, Any]:
    """The config file's data with its default policy on `classifier`; a bad file is reported (exit status 2)."""
    from pathlib import Path

    import yaml

    from llm_router.commands.common import load_or_exit
    from llm_router.config import default_data

    load_or_exit(config)
    data = yaml.safe_load(Path(config).read_text()) or {} if config else {}
    if classifier:
        base = default_data()
        policies = {**base["policies"], **(data.get("policies") or {})}
        name = data.get("default_policy", base.get("default_policy", "default"))
        policies[name] = {**policies[name], "classifier": classifier}
        data["policies"] = policies
    return data
