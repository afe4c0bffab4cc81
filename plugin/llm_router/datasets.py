"""Routing outcome data sets (RouterBench CSV, RouteLLM CSV, LLMRouter JSON, own traffic) as typed rows.

Each format is detected from the file itself. All files given together must hold the same
models; they become one `Dataset`: per prompt, every model's score (0..1) and the cost of
that call in USD (measured where the data has it, estimated from prices otherwise; the
`cost_note` says which). Own traffic (the decision log plus feedback, `learn.traffic`) knows
only the answering model's outcome per prompt: the other cells are NaN.
"""
from __future__ import annotations

import ast
import csv
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from llm_router.request import estimate_tokens

FORMATS = ("routerbench", "routellm", "llmrouter")
COST_SUFFIX = "|total_cost"
RESPONSE_SUFFIXES = ("|model_response", "_response")

# RouteLLM's data has no costs. The issue fixes the price ratio GPT-4 : Mixtral at 20:1;
# these are GPT-4-1106's list prices and 1/20 of them (USD per 1M input / output tokens).
ROUTELLM_STRONG_PRICE = (10.0, 30.0)
ROUTELLM_WEAK_PRICE = (0.5, 1.5)
# Output length assumed where the data has no token counts (RouteLLM, LLMRouter).
ASSUMED_OUTPUT_TOKENS = 300

csv.field_size_limit(1 << 30)


class DatasetError(Exception):
    """A data file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class Row:
    """One prompt and how every model did on it."""

    id: str
    prompt: str
    group: str  # task or subject (RouterBench eval_name, MMLU subject, LLMRouter task)
    scores: dict[str, float]  # model -> 0..1
    costs: dict[str, float]  # model -> USD for this call

    def body(self) -> bytes:
        """The prompt as an OpenAI chat request body, as a client would send it."""
        return chat_body(self.prompt)


@dataclass
class Dataset:
    """Outcomes of several models on the same prompts, as aligned arrays."""

    format: str
    models: tuple[str, ...]
    ids: list[str]
    prompts: list[str]
    groups: list[str]
    scores: np.ndarray  # (rows, models) 0..1
    costs: np.ndarray  # (rows, models) USD per call
    cost_note: str
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows left out
    sources: list[str] = field(default_factory=list)
    # Own traffic: per row the logged chance its answering model was picked (NaN: not logged).
    propensity: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def rows(self) -> Iterator[Row]:
        """The rows as typed values."""
        for i in range(len(self)):
            yield self.row(i)

    def row(self, i: int) -> Row:
        """Row i as a typed value."""
        return Row(self.ids[i], self.prompts[i], self.groups[i], dict(zip(self.models, self.scores[i].tolist())),
                   dict(zip(self.models, self.costs[i].tolist())))

    def subset(self, index: Sequence[int] | np.ndarray) -> "Dataset":
        """The rows at these positions (same models, notes and sources)."""
        idx = np.asarray(index, dtype=int)
        return Dataset(self.format, self.models, [self.ids[i] for i in idx], [self.prompts[i] for i in idx],
                       [self.groups[i] for i in idx], self.scores[idx], self.costs[idx], self.cost_note,
                       dict(self.skipped), list(self.sources),
                       self.propensity[idx] if self.propensity is not None else None)

    def describe(self) -> str:
        """One line: format, size, models and what was skipped."""
        skipped = ", ".join(f"{n} {why}" for why, n in self.skipped.items() if n) or "none"
        return f"{self.format}: {len(self)} prompts x {len(self.models)} models from {len(self.sources)} file(s); skipped: {skipped}"


def chat_body(prompt: str) -> bytes:
    """A minimal chat completions body carrying one user prompt."""
    return json.dumps({"model": "auto", "messages": [{"role": "user", "content": prompt}]}).encode()


def prompt_key(prompt: str) -> int:
    """A stable 63-bit hash of a prompt (fold assignment, held-out bookkeeping)."""
    return int.from_bytes(hashlib.blake2b(prompt.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big") >> 1


# ---- detection --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _File:
    path: Path
    kind: str  # a FORMATS entry, or "decisions", "feedback", "prices", "queries", "exclude", "skip"
    why: str = ""


def detect(path: Path) -> _File:
    """What a file holds, from its content; raises DatasetError when it is none of the known kinds."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), None)
            if not header:
                raise DatasetError(f"{path}: empty CSV file")
            if any(col.endswith(COST_SUFFIX) for col in header):
                return _File(path, "routerbench")
            if "prompt" in header and len(_routellm_models(header)) >= 2:
                return _File(path, "routellm")
            raise DatasetError(f"{path}: cannot tell the format: the CSV header has neither RouterBench columns "
                               f"('<model>{COST_SUFFIX}') nor RouteLLM columns ('prompt' and two or more model columns)")
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, list) and data and isinstance(data[0], dict) and {"question", "scores"} <= set(data[0]):
                return _File(path, "llmrouter")
            if isinstance(data, dict) and data and all(isinstance(v, dict) and "input_price" in v for v in data.values()):
                return _File(path, "prices")
            raise DatasetError(f"{path}: cannot tell the format: JSON is neither LLMRouter outcomes (a list of "
                               "{question, scores}) nor LLMRouter candidates (model -> {input_price, output_price})")
        if suffix == ".jsonl":
            with path.open(encoding="utf-8") as fh:
                first = fh.readline()
            rec = json.loads(first) if first.strip() else {}
            if "eval_prompt" in rec:
                return _File(path, "exclude")
            from llm_router.learn import traffic

            if isinstance(rec, dict) and traffic.is_decision(rec):
                return _File(path, "decisions")
            if isinstance(rec, dict) and traffic.is_feedback(rec):
                return _File(path, "feedback")
            if {"task_name", "query"} <= set(rec):
                return _File(path, "queries")
            return _File(path, "skip", "JSONL that is neither a decision log, feedback, nor outcomes (e.g. MT-Bench "
                                       "questions or judgements): not supported")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from None
    raise DatasetError(f"{path}: unsupported file type {suffix or '(none)'}; expected .csv (RouterBench, RouteLLM) "
                       "or .json (LLMRouter)")


def _routellm_models(header: list[str]) -> list[str]:
    return [c for c in header if c and c != "prompt" and not c.endswith(RESPONSE_SUFFIXES) and not c.startswith("Unnamed")]


def expand(paths: Iterable[str | Path]) -> list[_File]:
    """Files given and the files inside given folders (recursively), each with its detected kind."""
    out: list[_File] = []
    for p in map(Path, paths):
        if p.is_dir():
            for child in sorted(q for q in p.rglob("*") if q.is_file()):
                if child.suffix.lower() not in (".csv", ".json", ".jsonl"):
                    continue
                try:
                    out.append(detect(child))
                except DatasetError as exc:
                    out.append(_File(child, "skip", str(exc)))
        elif p.exists():
            found = detect(p)
            if found.kind == "skip":
                raise DatasetError(f"{p}: {found.why}")
            out.append(found)
        else:
            raise DatasetError(f"{p}: no such file or folder")
    return out


# ---- loading ----------------------------------------------------------------------------

def load(paths: Iterable[str | Path], *, exclude: Iterable[str | Path] = ()) -> Dataset:
    """Load outcome files (or folders of them) of one format into one Dataset.

    Files named like RouteLLM's `contaminated_prompts.jsonl` exclude their `eval_prompt`s;
    LLMRouter's `llm_candidates*.json` supplies prices and its query files supply task names
    (they are also picked up from beside an LLMRouter outcome file).
    """
    files = expand([*paths, *exclude])
    logs = [f.path for f in files if f.kind == "decisions"]
    feedback = [f.path for f in files if f.kind == "feedback"]
    if logs or feedback:
        return _load_own_traffic(files, logs, feedback)
    kinds = Counter(f.kind for f in files if f.kind in FORMATS)
    if not kinds:
        seen = ", ".join(f"{f.path.name} ({f.kind})" for f in files) or "nothing"
        raise DatasetError(f"no outcome data found in {seen}; expected RouterBench CSV, RouteLLM CSV or LLMRouter JSON")
    if len(kinds) > 1:
        raise DatasetError(f"files of different formats cannot be combined: {dict(kinds)}; give one format at a time")
    fmt = next(iter(kinds))
    excluded: set[str] = set()
    for f in files:
        if f.kind == "exclude":
            excluded |= _read_excluded(f.path)
    outcome = [f.path for f in files if f.kind == fmt]
    if fmt == "routerbench":
        ds = _load_routerbench(outcome)
    elif fmt == "routellm":
        ds = _load_routellm(outcome)
    else:
        prices = [f.path for f in files if f.kind == "prices"]
        queries = [f.path for f in files if f.kind == "queries"]
        ds = _load_llmrouter(outcome, prices, queries)
    if excluded:
        keep = [i for i, p in enumerate(ds.prompts) if p not in excluded]
        gone = len(ds) - len(keep)
        skipped = {**ds.skipped, "contaminated": gone}
        ds = ds.subset(keep)
        ds.skipped = skipped
    return ds


def _load_own_traffic(files: list[_File], logs: list[Path], feedback: list[Path]) -> Dataset:
    """Decision log lines joined with feedback lines (`learn.traffic`)."""
    from llm_router.learn.traffic import load_traffic

    others = sorted({f.kind for f in files if f.kind in FORMATS})
    if others:
        raise DatasetError(f"a decision log cannot be combined with {', '.join(others)} data; give one format at a time")
    if not logs:
        raise DatasetError("feedback lines were given without the decision log they rate (metrics.decision_log)")
    if not feedback:
        raise DatasetError("a decision log was given without feedback: add a JSONL file of {\"request_id\", \"score\" 0..1} lines")
    return load_traffic(logs, feedback)


def json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-blank line of a JSONL file; raises DatasetError naming the line."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{n}: not valid JSON: {exc}") from None
            if not isinstance(rec, dict):
                raise DatasetError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
            yield n, rec


def _read_excluded(path: Path) -> set[str]:
    return {rec["eval_prompt"] for _, rec in json_lines(path) if isinstance(rec.get("eval_prompt"), str)}


def _score(value: str, where: str) -> float:
    v = value.strip()
    low = v.lower()
    if low == "true":
        return 1.0
    if low == "false":
        return 0.0
    try:
        x = float(v)
    except ValueError:
        raise DatasetError(f"{where}: score {value!r} is not a number or True/False") from None
    if not 0.0 <= x <= 1.0 or x != x:
        raise DatasetError(f"{where}: score {x} is outside 0..1")
    return x


def list_literal(raw: str) -> list | None:
    """A Python list literal as RouterBench stores prompts and answers, or None when it is not one."""
    text = raw.strip()
    if not text.startswith("["):
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, list) else None


def _routerbench_prompt(raw: str) -> str:
    """RouterBench stores the prompt as a Python list literal of strings."""
    value = list_literal(raw)
    if value is not None and all(isinstance(x, str) for x in value):
        return "\n\n".join(value)
    return raw


def _load_routerbench(paths: list[Path]) -> Dataset:
    models: tuple[str, ...] | None = None
    ids, prompts, groups, scores, costs = [], [], [], [], []
    blank = 0
    for path in paths:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            these = tuple(c[: -len(COST_SUFFIX)] for c in header if c.endswith(COST_SUFFIX))
            missing = [m for m in these if m not in header]
            if missing:
                raise DatasetError(f"{path}: cost columns without score columns for {missing}")
            for col in ("prompt",):
                if col not in header:
                    raise DatasetError(f"{path}: missing column {col!r}")
            if models is None:
                models = these
            elif set(these) != set(models):
                raise DatasetError(f"{path}: models differ from the other files: {sorted(set(these) ^ set(models))}")
            for n, rec in enumerate(reader, 1):
                cells = [rec.get(m) for m in models] + [rec.get(m + COST_SUFFIX) for m in models] + [rec.get("prompt")]
                if any(c is None or not c.strip() for c in cells):
                    blank += 1
                    continue
                where = f"{path} row {n}"
                try:
                    cost = [float(rec[m + COST_SUFFIX]) for m in models]
                except ValueError:
                    raise DatasetError(f"{where}: a {COST_SUFFIX} cell is not a number") from None
                scores.append([_score(rec[m], f"{where} column {m!r}") for m in models])
                costs.append(cost)
                prompts.append(_routerbench_prompt(rec["prompt"]))
                ids.append(rec.get("sample_id") or f"{path.stem}:{n}")
                groups.append(rec.get("eval_name") or path.stem)
    assert models is not None
    return Dataset("routerbench", models, ids, prompts, groups, np.array(scores, float).reshape(-1, len(models)),
                   np.array(costs, float).reshape(-1, len(models)), "measured per call (RouterBench total_cost)",
                   {"blank cells": blank}, [str(p) for p in paths])


def _load_routellm(paths: list[Path]) -> Dataset:
    models: tuple[str, ...] | None = None
    ids, prompts, groups, scores = [], [], [], []
    blank = 0
    for path in paths:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            these = tuple(_routellm_models(reader.fieldnames or []))
            if models is None:
                models = these
            elif set(these) != set(models):
                raise DatasetError(f"{path}: models differ from the other files: {sorted(set(these) ^ set(models))}")
            group = path.stem.removeprefix("mmlu_").removesuffix("_responses")
            for n, rec in enumerate(reader, 1):
                cells = [rec.get(m) for m in models] + [rec.get("prompt")]
                if any(c is None or not c.strip() for c in cells):
                    blank += 1
                    continue
                scores.append([_score(rec[m], f"{path} row {n} column {m!r}") for m in models])
                prompts.append(rec["prompt"])
                ids.append(f"{path.stem}:{n}")
                groups.append(group)
    assert models is not None
    s = np.array(scores, float).reshape(-1, len(models))
    strong = int(np.argmax(s.mean(0))) if len(s) else 0
    prices = [ROUTELLM_STRONG_PRICE if j == strong else ROUTELLM_WEAK_PRICE for j in range(len(models))]
    costs = _priced(prompts, prices)
    note = (f"estimated: no costs in RouteLLM data; {models[strong]} at ${ROUTELLM_STRONG_PRICE[0]:g}/${ROUTELLM_STRONG_PRICE[1]:g} "
            f"per 1M in/out tokens, the other model(s) at 1/20 of that (the issue's 20:1 ratio); input tokens estimated "
            f"from the prompt, output assumed {ASSUMED_OUTPUT_TOKENS} tokens")
    return Dataset("routellm", models, ids, prompts, groups, s, costs, note, {"blank cells": blank}, [str(p) for p in paths])


def _priced(prompts: list[str], prices: list[tuple[float, float]]) -> np.ndarray:
    """(rows, models) USD per call from estimated input tokens and the assumed output length."""
    tokens = np.array([estimate_tokens(p) for p in prompts], float)
    pin = np.array([p[0] for p in prices], float)
    pout = np.array([p[1] for p in prices], float)
    return (tokens[:, None] * pin[None, :] + ASSUMED_OUTPUT_TOKENS * pout[None, :]) / 1e6


def _load_llmrouter(paths: list[Path], price_files: list[Path], query_files: list[Path]) -> Dataset:
    folders = {p.parent for p in paths}
    if not price_files:
        price_files = sorted(q for d in folders for q in d.glob("llm_candidates*.json"))
    if not query_files:
        query_files = sorted(q for d in folders for q in d.glob("query_data*.jsonl"))
    if not price_files:
        raise DatasetError(f"{paths[0]}: LLMRouter outcomes need prices: pass the llm_candidates JSON with --data")
    prices: dict[str, tuple[float, float]] = {}
    for pf in price_files:
        for name, info in json.loads(pf.read_text(encoding="utf-8")).items():
            try:
                prices[name] = (float(info["input_price"]), float(info.get("output_price", info["input_price"])))
            except (KeyError, TypeError, ValueError):
                raise DatasetError(f"{pf}: model {name!r} needs numeric input_price/output_price") from None
    tasks: dict[str, str] = {}
    for qf in query_files:
        with qf.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    rec = json.loads(line)
                    tasks.setdefault(rec.get("query", ""), rec.get("task_name", ""))
    models: tuple[str, ...] | None = None
    ids, prompts, groups, scores = [], [], [], []
    blank = 0
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        for n, rec in enumerate(data):
            sc = rec.get("scores") if isinstance(rec, dict) else None
            q = rec.get("question") if isinstance(rec, dict) else None
            if not isinstance(sc, dict) or not isinstance(q, str) or not q.strip():
                blank += 1
                continue
            if models is None:
                models = tuple(sc)
                unpriced = [m for m in models if m not in prices]
                if unpriced:
                    raise DatasetError(f"{path}: no price for models {unpriced} in {[str(p) for p in price_files]}")
            if set(sc) != set(models) or any(not isinstance(sc[m], (int, float)) for m in models):
                blank += 1
                continue
            scores.append([_score(str(sc[m]), f"{path}[{n}] model {m!r}") for m in models])
            prompts.append(q)
            ids.append(f"{path.stem}[{n}]")
            groups.append(tasks.get(q) or f"cluster{rec.get('cluster_id', '?')}")
    assert models is not None
    costs = _priced(prompts, [prices[m] for m in models])
    note = (f"estimated: LLMRouter prices from {', '.join(p.name for p in price_files)}; input tokens estimated from the "
            f"prompt, output assumed {ASSUMED_OUTPUT_TOKENS} tokens (the data has no token counts)")
    return Dataset("llmrouter", models, ids, prompts, groups, np.array(scores, float).reshape(-1, len(models)), costs, note,
                   {"incomplete records": blank}, [str(p) for p in paths])
