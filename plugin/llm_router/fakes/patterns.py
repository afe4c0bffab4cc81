"""Failure patterns for fake providers from the command line: `--fail a,b` and `--set PROVIDER.FIELD=VALUE`."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any

import orjson

from llm_router.fakes.providers import Behaviour

FAIL_STATUS = 503
ALL = "*"


def parse_value(text: str) -> Any:
    """A field value as JSON (numbers, true/false, null, lists), else the plain string."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def behaviour_changes(providers: Iterable[str], *, fail: str | None = None, sets: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Provider -> behaviour fields to change; a ValueError names the bad provider, field or item.

    fail: comma-separated providers that answer every request with 503.
    sets: PROVIDER.FIELD=VALUE items (PROVIDER may be '*' for all), e.g. deepseek.fail_first=2,
    together.first_byte_ms=3000, mistral.break_after_chunks=2, openai.status=429.
    """
    known = sorted(providers)
    fields_known = {f.name for f in fields(Behaviour)}
    out: dict[str, dict[str, Any]] = {}

    def check(name: str, what: str) -> None:
        if name != ALL and name not in known:
            raise ValueError(f"{what}: unknown provider {name!r} (known: {', '.join(known)})")

    for name in (n.strip() for n in (fail or "").split(",")):
        if name:
            check(name, "--fail")
            out.setdefault(name, {})["status"] = FAIL_STATUS
    for item in sets:
        target, eq, value = item.partition("=")
        name, dot, field = target.partition(".")
        if not eq or not dot or not name or not field:
            raise ValueError(f"--set {item!r}: expected PROVIDER.FIELD=VALUE, e.g. deepseek.fail_first=2")
        check(name, f"--set {item!r}")
        if field not in fields_known:
            raise ValueError(f"--set {item!r}: unknown field {field!r} (known: {', '.join(sorted(fields_known))})")
        for target_name in (known if name == ALL else [name]):
            out.setdefault(target_name, {})[field] = parse_value(value)
    for name, changes in out.items():
        for field, value in changes.items():
            problem = type_problem(field, value)
            if problem:
                raise ValueError(f"{name}.{field}: {problem}")
    return out


def type_problem(field: str, value: Any) -> str | None:
    """Why a value does not fit a Behaviour field (judged by the field's default), or None."""
    default = getattr(Behaviour(), field)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if isinstance(default, (int, float)):
        if not number or value < 0:
            return f"must be a non-negative number, got {value!r}"
        return None if isinstance(default, float) or isinstance(value, int) else f"must be a whole number, got {value!r}"
    if isinstance(default, dict):
        return None if isinstance(value, dict) else f"must be a mapping, got {value!r}"
    if field == "models":
        return None if value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value)) \
            else f"must be a list of model names, got {value!r}"
    return None if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0) \
        else f"must be a whole number or null, got {value!r}"
