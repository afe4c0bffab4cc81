"""Policy params of the orchestrated modes (cascade, hedge): parsed once, checked with errors naming the field."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llm_router.classify.answer_kind import lookup_key
from llm_router.orchestrate.kinds import KindChain, parse_kinds, unknown_models

SCORERS = ("auto", "logprob", "verify", "judge", "agree")
PICKS = ("first", "best")
DEFAULT_FLOOR = 0.5
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class ScoringParams:
    """How answers are judged: scorer, floor, optional judge model, per-call timeout."""

    scorer: str = "auto"
    floor: float = DEFAULT_FLOOR
    timeout_s: float = DEFAULT_TIMEOUT_S
    judge: str | None = None  # model id of the judge (scorer "judge")
    request_logprobs: bool = False  # add `logprobs: true` to chat requests (stripped from the reply)


@dataclass(frozen=True, slots=True)
class CascadeParams:
    """Cascade: escalate along the chain while the answer scores below the floor (or, scorer agree, until a quorum agrees)."""

    scoring: ScoringParams
    max_steps: int = 0  # 0: the whole chain
    quorum: int = 2  # scorer agree: models asked at once first; an answer this many share is accepted
    kinds: Mapping[str, KindChain] = field(default_factory=dict)  # scorer agree: answer kind -> its own chain and quorum

    def for_kind(self, kind: str) -> KindChain | None:
        """The chain and quorum of a request of this kind (see orchestrate.kinds); None: the plain chain and quorum."""
        key = lookup_key(self.kinds, kind) if self.kinds else None
        return self.kinds[key] if key is not None else None


@dataclass(frozen=True, slots=True)
class HedgeParams:
    """Hedge: the same request to n models at once; the first good answer, or the best one."""

    scoring: ScoringParams
    n: int = 2
    pick: str = "first"


_COMMON = {"scorer", "floor", "timeout_s", "judge", "request_logprobs"}
# Keys the selection strategies themselves read.
_STRATEGY_KEYS = {"cascade": {"chain", "length", "top", "max_steps", "quorum", "kinds"}, "hedge": {"models", "n", "pick"}}


def param_problems(strategy: str, params: Mapping[str, Any], models: Iterable[str]) -> list[str]:
    """Problems with a cascade/hedge policy's params, each naming the field ('params.floor: ...')."""
    if strategy not in _STRATEGY_KEYS:
        return []
    known = set(models)
    out: list[str] = []
    for key in params:
        if key not in _COMMON | _STRATEGY_KEYS[strategy] | {"pool", "map", "floors", "min_quality", "relative", "tradeoff",
                                                              "power", "categories"}:
            out.append(f"params.{key}: unknown for strategy {strategy!r} "
                       f"(known: {sorted(_COMMON | _STRATEGY_KEYS[strategy])})")
    try:
        _parse(strategy, params)
    except ValueError as exc:
        out.append(str(exc))
    judge = params.get("judge")
    if judge is not None and judge not in known:
        out.append(f"params.judge: unknown model {judge!r} (known: {sorted(known)})")
    for mid in params.get("models") or [] if isinstance(params.get("models"), list) else []:
        if mid not in known:
            out.append(f"params.models: unknown model {mid!r} (known: {sorted(known)})")
    if strategy == "cascade":
        out += unknown_models(params.get("kinds"), known)
    if "models" in params and not isinstance(params["models"], list):
        out.append(f"params.models: must be a list of model ids, got {type(params['models']).__name__}")
    return out


def _number(params: Mapping[str, Any], key: str, default: float, lo: float, hi: float, *, lo_open: bool = False) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"params.{key}: must be a number, got {value!r}")
    if value < lo or value > hi or (lo_open and value == lo):
        span = f"({lo:g}, {hi:g}]" if lo_open else f"[{lo:g}, {hi:g}]"
        raise ValueError(f"params.{key}: must be in {span}, got {value!r}")
    return float(value)


def _integer(params: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"params.{key}: must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _choice(params: Mapping[str, Any], key: str, default: str, allowed: tuple[str, ...]) -> str:
    value = params.get(key, default)
    if value not in allowed:
        raise ValueError(f"params.{key}: must be one of {list(allowed)}, got {value!r}")
    return value


def _scoring(params: Mapping[str, Any]) -> ScoringParams:
    scorer = _choice(params, "scorer", "auto", SCORERS)
    judge = params.get("judge")
    if judge is not None and not isinstance(judge, str):
        raise ValueError(f"params.judge: must be a model id, got {judge!r}")
    if scorer == "judge" and not judge:
        raise ValueError("params.judge: scorer 'judge' needs a judge model id")
    logprobs = params.get("request_logprobs", scorer == "logprob")
    if not isinstance(logprobs, bool):
        raise ValueError(f"params.request_logprobs: must be true or false, got {logprobs!r}")
    return ScoringParams(scorer=scorer, floor=_number(params, "floor", DEFAULT_FLOOR, 0.0, 1.0),
                         timeout_s=_number(params, "timeout_s", DEFAULT_TIMEOUT_S, 0.0, 600.0, lo_open=True),
                         judge=judge, request_logprobs=logprobs)


def _parse(strategy: str, params: Mapping[str, Any]) -> CascadeParams | HedgeParams:
    scoring = _scoring(params)
    if strategy == "hedge":
        if scoring.scorer == "agree":
            raise ValueError("params.scorer: 'agree' is for strategy 'cascade' (a hedge picks one answer; it does not wait for a quorum)")
        return HedgeParams(scoring, n=_integer(params, "n", 2, 2, 8), pick=_choice(params, "pick", "first", PICKS))
    if "quorum" in params and scoring.scorer != "agree":
        raise ValueError(f"params.quorum: only used with scorer 'agree', the scorer is {scoring.scorer!r}")
    quorum = _integer(params, "quorum", 2, 2, 8)
    chain = params.get("chain")
    if scoring.scorer == "agree" and isinstance(chain, list) and len(chain) <= quorum:
        raise ValueError(f"params.quorum: {quorum} needs a chain of at least {quorum + 1} models "
                         f"(the quorum asked at once, then one to escalate to), got {len(chain)}")
    max_steps = _integer(params, "max_steps", 0, 0, 16)
    if scoring.scorer == "agree" and 0 < max_steps <= quorum:
        raise ValueError(f"params.max_steps: {max_steps} leaves no model to escalate to after a quorum of {quorum}")
    if "kinds" in params and scoring.scorer != "agree":
        raise ValueError(f"params.kinds: only used with scorer 'agree', the scorer is {scoring.scorer!r}")
    kinds = parse_kinds(params.get("kinds"))
    for name, kc in kinds.items():
        if kc.quorum > 1 and 0 < max_steps <= kc.quorum:
            raise ValueError(f"params.max_steps: {max_steps} leaves no model to escalate to after "
                             f"params.kinds.{name}.quorum {kc.quorum}")
    return CascadeParams(scoring, max_steps=max_steps, quorum=quorum, kinds=kinds)


def parse_params(strategy: str, params: Mapping[str, Any]) -> CascadeParams | HedgeParams:
    """Parsed params of a validated policy (a few microseconds; the calls it steers take seconds)."""
    return _parse("hedge" if strategy == "hedge" else "cascade", params)
