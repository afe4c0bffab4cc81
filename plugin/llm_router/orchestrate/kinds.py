"""Per-answer-kind agreement chains: a request's kind read from its prompt, and the chain and quorum a policy gives it.

A cascade policy with `scorer: agree` may carry `params.kinds`, a map answer kind -> {chain, quorum}.
The kinds are those the eval chooses configurations for (`policy_kind`): 'choice:<n options>',
'number', 'code', 'text'. A 'choice:<n>' request without its own entry takes 'choice', then
'default'; a kind with no entry (and no 'default') runs the policy's plain chain and quorum.
Quorum 1 routes to the chain's first model alone: plain routing, no orchestration.
Pure functions: the strategy (to build the chain), the runtime (for the quorum) and the eval
replay all call these, so they agree on every request.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llm_router.classify.answer_kind import BASE_KINDS, DEFAULT

MAX_QUORUM = 8
MAX_OPTIONS = 26
_CHOICE_N = re.compile(r"choice:(\d+)")


@dataclass(frozen=True, slots=True)
class KindChain:
    """What one answer kind runs: `chain[:quorum]` asked at once, then the rest one by one (quorum 1: the first alone)."""

    chain: tuple[str, ...]
    quorum: int


def valid_kind_name(name: Any) -> bool:
    """Whether `name` is a key `kinds` may have."""
    if not isinstance(name, str):
        return False
    if name in BASE_KINDS or name == DEFAULT:
        return True
    m = _CHOICE_N.fullmatch(name)
    return m is not None and 2 <= int(m.group(1)) <= MAX_OPTIONS


def parse_kinds(raw: Any) -> dict[str, KindChain]:
    """`params.kinds` checked: a ValueError naming the first bad field ('params.kinds.code.quorum: ...')."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"params.kinds: must be a mapping answer kind -> {{chain, quorum}}, got {type(raw).__name__}")
    out: dict[str, KindChain] = {}
    for name, entry in raw.items():
        where = f"params.kinds.{name}"
        if not valid_kind_name(name):
            raise ValueError(f"{where}: unknown answer kind {name!r} (known: {', '.join(BASE_KINDS)}, "
                             f"choice:<number of options 2..{MAX_OPTIONS}>, {DEFAULT})")
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: must be a mapping with chain and quorum, got {type(entry).__name__}")
        extra = sorted(set(entry) - {"chain", "quorum"})
        if extra:
            raise ValueError(f"{where}.{extra[0]}: unknown (known: chain, quorum)")
        chain = entry.get("chain")
        if not isinstance(chain, list) or not chain:
            raise ValueError(f"{where}.chain: must be a non-empty list of model ids, got {chain!r}")
        for i, mid in enumerate(chain):
            if not isinstance(mid, str) or not mid:
                raise ValueError(f"{where}.chain[{i}]: must be a model id, got {mid!r}")
        if len(set(chain)) != len(chain):
            raise ValueError(f"{where}.chain: names a model twice: {chain!r}")
        quorum = entry.get("quorum", 2)
        if isinstance(quorum, bool) or not isinstance(quorum, int) or not 1 <= quorum <= MAX_QUORUM:
            raise ValueError(f"{where}.quorum: must be an integer in [1, {MAX_QUORUM}], got {quorum!r}")
        if quorum > 1 and len(chain) <= quorum:
            raise ValueError(f"{where}.chain: quorum {quorum} needs at least {quorum + 1} models "
                             f"(the quorum asked at once, then one to escalate to), got {len(chain)}")
        out[name] = KindChain(tuple(chain), quorum)
    return out


def unknown_models(raw: Any, models: Iterable[str]) -> list[str]:
    """Every model id in `params.kinds` the catalog does not have, each naming its field."""
    if not isinstance(raw, Mapping):
        return []
    known = set(models)
    out = []
    for name, entry in raw.items():
        chain = entry.get("chain") if isinstance(entry, Mapping) else None
        for i, mid in enumerate(chain if isinstance(chain, list) else []):
            if isinstance(mid, str) and mid not in known:
                out.append(f"params.kinds.{name}.chain[{i}]: unknown model {mid!r} (known: {sorted(known)})")
    return out
