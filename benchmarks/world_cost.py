"""World forget10: T3 end to end (features + head + calibration, as `compare` runs it) beside GradDiff, and T3 with
another checkout's code in the same run (a before / after of a speed-up).

Each run is its own process with `--threads` torch threads (OMP_NUM_THREADS to match), with a cold feature cache:

  t3        unlearn() with the packaged recipe, then calibrate() with the default grid, the world's calibration
            authors as never-seen items and world:pretrained as the reference model (what `compare` does for T3);
  graddiff  the packaged trainer with `compare`'s defaults (lr 3e-4, 10 epochs, batch 16 x 2 accumulation).

With `--before SRC` (another checkout's src/ directory, e.g. the main branch's) T3 runs with that code too,
interleaved with this checkout's, and the two calibrations are compared row by row (same chosen setting, same
figures: a speed-up that keeps the result exactly says "identical" -- every row's constraints and the feasible rows'
objective, which is all the rule reads).

    python benchmarks/world_cost.py --before ../main/src           # before / after / GradDiff, twice each
    python benchmarks/world_cost.py --repeat 1 --threads 2
    python benchmarks/world_cost.py --training    # what training the world's models cost (a cold demo's first step)

`--training` reads the training records (`train_info.json`) of the default world's cached models -- pretrained,
full, retain90, the three a first `t3unlearn demo` trains: the base, then the two fine-tunes side by side on two
cores -- and prints their steps, CPU and wall seconds, and the CPU seconds on the critical path.

Prints CPU and wall seconds of each run and their medians; the world's models are trained first if missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"


def child_t3(out: Path, features: Path) -> None:
    from t3unlearn.benchmarks import get_benchmark
    from t3unlearn.lm import load_model, load_tokenizer
    from t3unlearn.t3 import unlearn
    from t3unlearn.t3.calibrate import calibrate

    bench = get_benchmark("default")
    paths = bench.models(("full", "pretrained"), progress=False)
    tok, base, reference = load_tokenizer(str(paths["full"])), load_model(str(paths["full"])), load_model(str(paths["pretrained"]))
    forget, retain, perturbed = bench.qa("forget10"), bench.qa("retain90"), bench.qa("forget10_perturbed")
    holdout, _ = bench.calibration("forget10")
    t0, c0 = time.perf_counter(), time.process_time()
    result = unlearn(base, tok, forget, retain, cache_dir=features)  # a fresh cache: features computed and written
    t1, c1 = time.perf_counter(), time.process_time()
    cal = calibrate(result.model, tok, forget, holdout, retain, reference=reference, perturbed=perturbed)
    t2, c2 = time.perf_counter(), time.process_time()
    # what the rule reads: every row's constraints, and the objective of the feasible rows (an infeasible row's
    # truth ratios are not scored since calibration stopped scoring what it never reads)
    constraints = ("label", "ks", "mia_auc", "forget_prob", "holdout_prob", "retain_prob", "retain_ratio", "feasible")
    rows = json.dumps([r.as_dict() if r.feasible else {k: r.as_dict()[k] for k in constraints} for r in cal.rows],
                      sort_keys=True)
    out.write_text(json.dumps(dict(wall_s=t2 - t0, cpu_s=c2 - c0, unlearn_wall_s=t1 - t0, unlearn_cpu_s=c1 - c0,
                                   calibration_wall_s=t2 - t1, calibration_cpu_s=c2 - c1, chosen=cal.chosen.setting.label(),
                                   rows_sha256=hashlib.sha256(rows.encode()).hexdigest(), rows=json.loads(rows))))


def child_graddiff(out: Path, features: Path) -> None:
    from t3unlearn.baselines import unlearn_baseline
    from t3unlearn.benchmarks import get_benchmark

    bench = get_benchmark("default")
    full = bench.models(("full",), progress=False)["full"]
    cfg = dict(epochs=10, batch_size=16, grad_accum=2, warmup_epochs=1, weight_decay=0.01, max_grad_norm=1.0, lr=3e-4)
    c0 = time.process_time()
    res = unlearn_baseline("graddiff", str(full), bench.qa("forget10"), bench.qa("retain90"), params={"alpha": 1.0, "gamma": 1.0},
                           config=cfg, progress=False)
    out.write_text(json.dumps(dict(wall_s=res.cost.wall_seconds, cpu_s=time.process_time() - c0)))


def row_differences(before: dict, after: dict) -> str:
    """How two calibrations differ: the chosen settings, which rows are feasible, and the largest difference of each
    figure the rule reads over the rows both score (a change of rounding moves them by ~1e-7)."""
    a, b = ({r["label"]: r for r in x.get("rows", [])} for x in (before, after))
    if not a or set(a) != set(b):
        return "the grids differ (other settings)"
    feasible = sum(a[k]["feasible"] != b[k]["feasible"] for k in a)
    diff: dict[str, float] = {}
    for k in a:
        for f, v in a[k].items():
            w = b[k].get(f)
            if isinstance(v, (int, float)) and isinstance(w, (int, float)) and not isinstance(v, bool):
                diff[f] = max(diff.get(f, 0.0), abs(float(v) - float(w)))
    big = ", ".join(f"{f} {d:.1e}" for f, d in sorted(diff.items(), key=lambda x: -x[1])[:4])
    chosen = "the same chosen setting" if before["chosen"] == after["chosen"] else f"chosen {before['chosen']} -> {after['chosen']}"
    return f"{chosen}; {feasible} of {len(a)} rows change feasibility; largest differences: {big}"


def run(kind: str, src: Path, threads: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="world-cost-") as tmp:
        out = Path(tmp) / "out.json"
        env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        code = (f"import sys, torch; torch.set_num_threads({threads}); sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                f"import world_cost; from pathlib import Path; world_cost.child_{kind}(Path({str(out)!r}), Path({tmp!r}) / 'features')")
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"world_cost: the {kind} run ({src}) failed:\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text())


def training_breakdown() -> int:
    from t3unlearn.benchmarks import get_benchmark
    from t3unlearn.world.train import model_path, train_settings

    bench = get_benchmark("default")
    world = bench.training_dir()
    settings = train_settings(world)
    total, cpu = {"cpu": 0.0, "wall": 0.0}, {}
    print("the default world's models (a cold demo trains pretrained, then full and retain90 side by side; one thread each):")
    for name in ("pretrained", "full", "retain90"):
        info_path = model_path(world, settings, name) / "train_info.json"
        if not info_path.is_file():
            print(f"  {name:<10} not trained yet ('t3unlearn world train' or a first demo trains it)")
            continue
        info = json.loads(info_path.read_text())
        total["cpu"] += info["cpu_seconds"]
        cpu[name] = info["cpu_seconds"]
        total["wall"] += info["seconds"]
        print(f"  {name:<10} {info['epochs']:>3} epochs {info['steps']:>5} steps  {info['cpu_seconds']:7.1f} CPU s "
              f"{info['seconds']:7.1f} wall s  ({info['threads']} thread(s), torch {info['torch']})")
    print(f"  {'total':<10} {'':>22}{total['cpu']:7.1f} CPU s {total['wall']:7.1f} wall s")
    if len(cpu) == 3:
        path = cpu["pretrained"] + max(cpu["full"], cpu["retain90"])
        print(f"  {'critical path':<14} {'':>18}{path:7.1f} CPU s  (pretrained, then the longer fine-tune)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, default=None, help="another checkout's src/ directory: T3 with its code as well")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every run [1]")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each kind, interleaved [2]")
    ap.add_argument("--json", type=Path, default=None, help="also write every figure here")
    ap.add_argument("--training", action="store_true", help="instead: what training the world's cached models cost")
    args = ap.parse_args(argv)
    if args.training:
        return training_breakdown()
    if args.before is not None and not (args.before / "t3unlearn" / "__init__.py").is_file():
        ap.error(f"--before {args.before}: not a src/ directory holding t3unlearn; give e.g. ../main/src")
    if args.threads < 1 or args.repeat < 1:
        ap.error("--threads and --repeat must be >= 1")
    kinds = ([("T3 before", "t3", args.before.resolve())] if args.before else []) + [("T3", "t3", HERE), ("GradDiff", "graddiff", HERE)]
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in kinds}
    print(f"world forget10, {args.threads} thread(s), {args.repeat} run(s) of each, interleaved; T3 = features + head + calibration",
          flush=True)
    for i in range(args.repeat):
        for label, kind, src in kinds:
            r = run(kind, src, args.threads)
            runs[label].append(r)
            extra = f"  (unlearn {r['unlearn_cpu_s']:.1f} + calibration {r['calibration_cpu_s']:.1f} CPU s; {r['chosen']})" if kind == "t3" else ""
            print(f"  run {i + 1} {label:<10} {r['cpu_s']:7.1f} CPU s {r['wall_s']:7.1f} wall s{extra}", flush=True)
    med = {label: {k: statistics.median(r[k] for r in rs) for k in ("cpu_s", "wall_s")} for label, rs in runs.items()}
    print("\nmedians:")
    for label, m in med.items():
        print(f"  {label:<10} {m['cpu_s']:7.1f} CPU s {m['wall_s']:7.1f} wall s   / GradDiff: {m['cpu_s'] / med['GradDiff']['cpu_s']:.2f} (CPU) "
              f"{m['wall_s'] / med['GradDiff']['wall_s']:.2f} (wall)")
    if args.before:
        same = {r["rows_sha256"] for r in runs["T3 before"] + runs["T3"]}
        print(f"calibration before vs after: {'identical (the chosen setting, every row the rule reads)' if len(same) == 1 else 'DIFFERENT'}; "
              f"chosen {runs['T3'][0]['chosen']}")
        if len(same) > 1:
            print("  " + row_differences(runs["T3 before"][0], runs["T3"][0]))
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "runs": runs, "medians": med}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
