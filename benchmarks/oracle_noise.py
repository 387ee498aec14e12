"""What an exact unlearner scores: the retain model of one training of the tiny models, against another's.

Forget quality and privleak compare a method with *one* oracle: the retain model of the same training. Retraining
without the forget set is exact unlearning, but a second retrain (another training seed: another pretrained base,
another order of batches) is not the same model, and the metrics see the difference. This script scores every
training's oracle against every other training's, as if it were an unlearning method, and prints what a perfect
unlearner reads on each split: how high forget quality goes and how far privleak strays for a method that forgets
exactly.

    python benchmarks/oracle_noise.py --benchmark world --splits forget01,forget05,forget10 --trainings 0,1,2
    T3UNLEARN_TOFU_DIR=../shared/data/tofu python benchmarks/oracle_noise.py --benchmark tofu --trainings 0,1,2

Models missing from the cache are trained first (``t3unlearn world train --seed T`` / ``t3unlearn tofu train``;
training 0 of the default world ships with the package), each oracle is evaluated once (TOFU's metrics, cached
under ``$T3UNLEARN_HOME/eval`` as ``compare`` caches them), then every ordered pair (method, reference) with two
different trainings is scored. ``--out DIR`` also writes ``oracle_noise.json``. One torch thread by default.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def _fmt(x: float) -> str:
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 or x == 0 else f"{x:.2e}"


def _spread(values: list[float], signed: bool = False) -> str:
    """Mean ± sd; ``signed``: privleak's way (+1.2 ± 3.4)."""
    mean, sd = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:+.1f} ± {sd:.1f}" if signed else f"{_fmt(mean)} ± {_fmt(sd)}"


def split_pairs(bench, split: str, trainings: list[int], *, log, progress: bool) -> dict:
    """Evaluate every training's oracle on ``split`` and score each against each other one."""
    from t3unlearn.benchmarks import cached_evaluation
    from t3unlearn.eval.runner import cross_reference, retain_split

    retain = retain_split(split)
    data = bench.data(split)
    results = {}
    for t in trainings:
        path = bench.models((retain,), log=log, progress=progress, seed=t)[retain]
        results[t] = cached_evaluation(path, name=f"{retain}-t{t}", split=split, data=data, benchmark=bench.label,
                                       progress=progress, log=log, role="retain")
    pairs = cross_reference(results)
    oracles = {t: {"min_k_auc": r.mia_min_k_auc(), "model_utility": r.agg("model_utility"),
                   "forget_truth_ratio_median": statistics.median(r.forget_truth_ratios())}
               for t, r in results.items()}
    return {"split": split, "retain_model": retain, "oracles": oracles, "pairs": pairs}


def report(rec: dict) -> list[str]:
    pairs = rec["pairs"]
    fq = [p["forget_quality"] for p in pairs]
    pl = [p["privleak"] for p in pairs]
    lines = [f"{rec['split']} ({rec['retain_model']} of training A scored against training B's):"]
    for p in pairs:
        lines.append(f"  A={p['method']} B={p['reference']}: forget quality {_fmt(p['forget_quality'])}, "
                     f"privleak {p['privleak']:+.1f}, utility {p['model_utility_ratio']:.3f}x B's")
    aucs = ", ".join(f"{o['min_k_auc']:.3f}" for o in rec["oracles"].values())
    lines.append(f"  forget quality: {_spread(fq)} (min {_fmt(min(fq))}, median {_fmt(statistics.median(fq))}; "
                 f"{sum(x >= 0.05 for x in fq)} of {len(fq)} >= 0.05)")
    lines.append(f"  privleak: {_spread(pl, signed=True)} ({sum(abs(x) <= 15 for x in pl)} of {len(pl)} "
                 f"within ±15); the oracles' min-k AUCs (forget vs holdout): {aucs}")
    return lines


def table(records: list[dict], benchmark: str) -> list[str]:
    rows = [f"| {benchmark} split | oracles' min-k AUC | exact unlearner: forget quality, mean ± sd (min) | ≥ 0.05 | "
            "privleak, mean ± sd (range) | within ±15 |", "|---|---|---|---:|---|---:|"]
    for rec in records:
        fq = [p["forget_quality"] for p in rec["pairs"]]
        pl = [p["privleak"] for p in rec["pairs"]]
        aucs = " / ".join(f"{o['min_k_auc']:.3f}" for o in rec["oracles"].values())
        rows.append(f"| {rec['split']} | {aucs} | {_spread(fq)} ({_fmt(min(fq))}) | "
                    f"{sum(x >= 0.05 for x in fq)} of {len(fq)} | {_spread(pl, signed=True)} "
                    f"({min(pl):+.1f} to {max(pl):+.1f}) | {sum(abs(x) <= 15 for x in pl)} of {len(pl)} |")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmark", default="world", help="world (default), world-PRESET, a built world or tofu")
    ap.add_argument("--splits", default="forget01,forget05,forget10", help="comma-separated forgetXX splits")
    ap.add_argument("--trainings", default="0,1,2", help="training seeds of the tiny models (at least two)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--out", help="directory for oracle_noise.json")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)

    import torch

    from t3unlearn.benchmarks import get_benchmark
    from t3unlearn.errors import T3Error
    from t3unlearn.eval.runner import split_configs
    from t3unlearn.experiments.compare.trainings import parse_trainings

    try:
        trainings = list(dict.fromkeys(parse_trainings(args.trainings)))
        splits = [s.strip() for s in args.splits.split(",") if s.strip()]
        for split in splits:
            split_configs(split)
        bench = get_benchmark(args.benchmark)
    except T3Error as e:
        ap.error(str(e))
    if len(trainings) < 2:
        ap.error("--trainings needs at least two different training seeds, e.g. 0,1,2")
    if args.threads:
        torch.set_num_threads(args.threads)
    records = []
    for split in splits:
        rec = split_pairs(bench, split, trainings, log=print, progress=not args.quiet)
        records.append(rec)
        print("\n".join(report(rec)), flush=True)
    print()
    print("\n".join(table(records, bench.label)))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "oracle_noise.json").write_text(json.dumps({"benchmark": bench.label, "trainings": trainings,
                                                           "splits": records}, indent=1, default=str))
        print(f"wrote {out / 'oracle_noise.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
