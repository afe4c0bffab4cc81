"""Speed of the learned classifier: `python -m llm_router.learn.bench --model MODEL --data PATH...`.

Times, one request at a time over real prompts (after warm-up), the whole classify call and
its two parts side by side: the embedding + structural features, and the model (a few small
matrix products and a sigmoid for all models together, topic-cluster memberships included).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from llm_router.classify.learned import LearnedClassifier
from llm_router.datasets import load
from llm_router.learn.clusters import describe
from llm_router.learn.train import requests_of


def _pct(xs: list[float]) -> str:
    a = np.array(xs) * 1e6
    return f"p50 {np.percentile(a, 50):7.1f} us  p99 {np.percentile(a, 99):7.1f} us  mean {a.mean():7.1f} us"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m llm_router.learn.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model file from `llm-router train`")
    ap.add_argument("--data", nargs="+", required=True, help="prompts to time (any supported data set)")
    ap.add_argument("--n", type=int, default=1000, help="requests to time (default 1000)")
    args = ap.parse_args(argv)
    clf = LearnedClassifier.load(args.model)
    ds = load(args.data)
    reqs = requests_of(ds.subset(np.arange(min(args.n, len(ds)))))
    for r in reqs[:50]:
        clf.classify(r)
    feats, model, total = [], [], []
    for r in reqs:
        t0 = time.perf_counter()
        x = clf.featurizer.features(r)
        t1 = time.perf_counter()
        clf.model.predict(x)
        t2 = time.perf_counter()
        clf.classify(r)
        t3 = time.perf_counter()
        feats.append(t1 - t0)
        model.append(t2 - t1)
        total.append(t3 - t2)
    print(f"{len(reqs)} requests, {len(clf.model.models)} models, {clf.featurizer.dim} features ({clf.model.features}), "
          f"topic clusters: {describe(clf.model.clusters)}")
    print(f"features (embedding + structure): {_pct(feats)}")
    print(f"model (all models at once):       {_pct(model)}")
    print(f"classify (whole call):            {_pct(total)}")


if __name__ == "__main__":
    main()
