"""The images main table: every baseline, ≥ 5 seeds, 95 % intervals, many-sample forget rates, printed noise floors.

    python benchmarks/images_main.py --tune --out t3-runs/lambda          # EraseDiff's learning rate, on seed 0
    python benchmarks/images_main.py --families vae,ddpm --out t3-runs/lambda
    python benchmarks/images_main.py --report --out t3-runs/lambda

It shares its measurement and its ``results.jsonl`` with the λ ablation (``benchmarks/images_lambda.py``, same
``--out``): a unit (family, arm, seed) measured there (SISS at λ = 0.5 and λ = 0, SISS without importance
sampling, Adaptive-λ) is not run again, and every arm is measured the same way (``measure.measure_generator``:
the classifier and the geometry detector on ``--n-forget`` samples of label 1, accuracy and Fréchet on
``--per-label`` samples of each digit, sampling seed 4321). Each arm runs with its method's preset settings
(``presets.py``); they were set on seed 0 (the baselines' by hand in earlier work, EraseDiff's learning rate by
``--tune``: lowest classifier forget rate among candidates within 0.02 accuracy of the full model), and seed 0 is
in no reported row. The retain oracle (retrained without the forget set) is trained per seed (``--oracle``
families; a DDPM oracle costs minutes per seed).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import images_lambda as lam  # noqa: E402  (the shared results file, the ablation's arms and floors)

ARMS = {  # name -> (method, params, families)
    "naive deletion": ("naive", {}, ("ddpm", "vae")),
    "NegGrad": ("neggrad", {}, ("ddpm", "vae")),
    "NegGrad+": ("neggrad_plus", {}, ("ddpm", "vae")),
    "λ = 0.5": ("siss", {"lambda": 0.5}, ("ddpm", "vae")),
    "λ = 0": ("siss", {"lambda": 0.0}, ("ddpm", "vae")),
    "no importance sampling": ("siss_no_is", {}, ("ddpm", "vae")),
    "Adaptive-λ (variance)": ("adaptive_siss", {}, ("ddpm", "vae")),
    "EraseDiff": ("erasediff", {}, ("ddpm",)),
}
TITLES = {"λ = 0.5": "SISS (λ = 0.5)", "λ = 0": "SISS, λ = 0", "no importance sampling": "SISS without importance sampling",
          "Adaptive-λ (variance)": "Adaptive-λ SISS (variance)"}
TUNE = {"EraseDiff": [1e-5, 5e-5, 2e-4]}  # the learning rates tried on the tuning seed


def _measure_kw(args, fam: str, P) -> dict:
    return dict(n_forget=args.n_forget if fam == "vae" else args.n_forget_ddpm,
                per_label=args.per_label if fam == "vae" else args.per_label_ddpm, steps=int(P.eval.get("steps", 30)))


def run(args) -> None:
    from t3unlearn.images import api
    from t3unlearn.images.measure import measure_generator
    from t3unlearn.images.models import ImageGenerator
    from t3unlearn.images.trainer import unlearn

    out, P, bench, clf, det, done, record = lam.measurement(args)
    for fam in args.families:
        mkw = _measure_kw(args, fam, P)
        full = ImageGenerator.load(api.ensure_generator(fam, "full", preset=P, progress=False))
        if (fam, "full", 0) not in done:
            record({"family": fam, "arm": "full", "seed": 0, **measure_generator(full, bench, clf, det, **mkw)})

        def unit(arm, seed, lr=None):
            method, extra, fams = ARMS[arm]
            name = arm if lr is None else f"{arm} lr {lr:g}"
            if fam not in fams or (fam, name, seed) in done:
                return
            cfg, par = P.unlearn_settings(fam, method)
            cfg = {**cfg, "seed": seed, **({"lr": lr} if lr is not None else {})}
            t0 = time.perf_counter()
            gen, _ = unlearn(full, bench, method, params={**par, **extra}, config=cfg, progress=False)
            record({"family": fam, "arm": name, "seed": seed, "seconds": time.perf_counter() - t0,
                    **measure_generator(gen, bench, clf, det, **mkw)})

        if args.tune:
            for arm, lrs in TUNE.items():
                for lr in lrs:
                    unit(arm, args.tune_seed, lr)
                print(f"{fam} {arm}: best learning rate on tuning seed {args.tune_seed}: {_best_lr(out, fam, arm, args.tune_seed)}")
            continue
        for seed in args.seeds:
            if fam in args.oracle and (fam, "retain oracle", seed) not in done:
                path = api.ensure_generator(fam, "retain", preset=P, seed=seed, progress=False)
                secs = ImageGenerator.load(path).meta["train"]["train_seconds"]
                record({"family": fam, "arm": "retain oracle", "seed": seed, "seconds": secs,
                        **measure_generator(ImageGenerator.load(path), bench, clf, det, **mkw)})
            for arm in args.arms:
                unit(arm, seed)


def _best_lr(out: Path, fam: str, arm: str, tune_seed: int):
    rows = lam._load(out)
    full = [r for r in rows if r["family"] == fam and r["arm"] == "full"]
    cand = [r for r in rows if r["family"] == fam and r["seed"] == tune_seed and r["arm"].startswith(f"{arm} lr ")]
    if not full or not cand:
        return None
    ok = [r for r in cand if r["class_acc"] >= full[0]["class_acc"] - 0.02] or cand
    return min(ok, key=lambda r: (r["forget_clf"], r["frechet"]))["arm"].split(" lr ")[-1]


def report(args) -> None:
    from t3unlearn.images.measure import binomial_interval, t_interval

    out = Path(args.out)
    rows = lam._load(out)
    lam._floors(args, rows)
    for fam in ("ddpm", "vae"):
        fr = [r for r in rows if r["family"] == fam and (r["seed"] in args.seeds or r["arm"] == "full")]
        full = [r for r in fr if r["arm"] == "full"]
        if not full:
            continue
        full = full[0]
        n = full["n_forget"]
        lo, hi = binomial_interval(full["k_clf"], n)
        lo1, hi1 = binomial_interval(round(0.01 * n), n)
        print(f"\n**{fam.upper()}**: {n} samples of label 1 per model, {full['per_label']} per digit for accuracy and "
              f"Fréchet; rows: seeds {args.seeds} (tuning seed {args.tune_seed} excluded), mean ± 95 % t-interval "
              f"half-width over seeds.\n")
        tuned = "; ".join(f"{a} lr {_best_lr(out, fam, a, args.tune_seed)}" for a in TUNE
                          if fam in ARMS[a][2] and _best_lr(out, fam, a, args.tune_seed))
        print(f"sampling floor of one model's rate at n = {n}: full model {100 * full['forget_clf']:.2f} % (95 % Wilson "
              f"{100 * lo:.2f}–{100 * hi:.2f} %); a 1 % rate reads {100 * lo1:.2f}–{100 * hi1:.2f} %."
              + (f" Chosen on tuning seed {args.tune_seed}: {tuned}." if tuned else ""))
        res = [full] + [r for r in rows if r["family"] == fam and r["arm"] == "full (resampled)"]
        if len(res) > 1:
            import numpy as np

            sd = {k: float(np.std([s * r[k] for r in res], ddof=1)) for k, s in (("forget_clf", 100), ("frechet", 1))}
            print(f"sampling noise of one model ({len(res)} sampling seeds of the full model): sd of the classifier "
                  f"forget rate {sd['forget_clf']:.2f} points, of Fréchet {sd['frechet']:.1f}.")
        print()
        print("| model | seeds | forget rate, classifier | forget rate, geometry | class acc. | Fréchet | wall time |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        print(f"| full (before unlearning) | 1 | {100 * full['forget_clf']:.2f} % | {100 * full['forget_geo']:.2f} % | "
              f"{full['class_acc']:.3f} | {full['frechet']:.1f} | – |")
        for arm in ["retain oracle", *ARMS]:
            rs = [r for r in fr if r["arm"] == arm]
            if not rs:
                continue

            def f(key, scale=1.0, digits=2):
                m, h = t_interval([scale * r[key] for r in rs])
                return f"{m:.{digits}f} ± {h:.{digits}f}" if not math.isnan(h) else f"{m:.{digits}f}"

            title = "retain oracle (retrained without A)" if arm == "retain oracle" else TITLES.get(arm, arm)
            print(f"| {title} | {len(rs)} | {f('forget_clf', 100)} % | {f('forget_geo', 100)} % | {f('class_acc', 1, 3)} | "
                  f"{f('frechet', 1, 1)} | {f('seconds', 1, 0)} s |")
        _paired(fr, "λ = 0.5")


def _paired(fr: list[dict], ref_arm: str) -> None:
    """Each arm minus ``ref_arm`` on the same seeds, with 95 % t-intervals (forget rates in points)."""
    from t3unlearn.images.measure import t_interval

    ref = {r["seed"]: r for r in fr if r["arm"] == ref_arm}
    lines = []
    for arm in ARMS:
        rs = [r for r in fr if r["arm"] == arm and r["seed"] in ref]
        if arm == ref_arm or len(rs) < 2:
            continue
        cells = []
        for key, scale, digits in (("forget_clf", 100, 2), ("forget_geo", 100, 2), ("class_acc", 1, 3), ("frechet", 1, 1)):
            m, h = t_interval([scale * (r[key] - ref[r["seed"]][key]) for r in rs])
            cells.append(f"{m:+.{digits}f} ± {h:.{digits}f}")
        lines.append(f"| {TITLES.get(arm, arm)} | {len(rs)} | " + " | ".join(cells) + " |")
    if lines:
        print(f"\npaired differences, each arm minus {TITLES.get(ref_arm, ref_arm)}, same seeds; 95 % t-intervals:\n")
        print("| model | seeds | Δ forget rate, classifier (points) | Δ forget rate, geometry (points) | Δ class acc. | Δ Fréchet |")
        print("|---|---:|---:|---:|---:|---:|")
        print("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="vae,ddpm")
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--tune-seed", type=int, default=0)
    ap.add_argument("--tune", action="store_true", help="run the tuning candidates on the tuning seed only")
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms to run (default all)")
    ap.add_argument("--oracle", default="vae", help="families whose retain oracle is trained per seed")
    ap.add_argument("--n-forget", type=int, default=5000, help="label-1 samples per VAE model")
    ap.add_argument("--n-forget-ddpm", type=int, default=800, help="label-1 samples per DDPM model (30 steps each)")
    ap.add_argument("--per-label", type=int, default=200)
    ap.add_argument("--per-label-ddpm", type=int, default=20)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="t3-runs/lambda")
    ap.add_argument("--report", action="store_true", help="print the tables from the results so far")
    args = ap.parse_args(argv)
    args.families = [f for f in args.families.split(",") if f]
    args.oracle = [f for f in args.oracle.split(",") if f]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        print(f"unknown arm(s) {', '.join(unknown)}; choose among: {', '.join(ARMS)}", file=sys.stderr)
        return 2
    if args.tune_seed in args.seeds:
        print("the tuning seed must not be among the reported seeds", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    report(args) if args.report else run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
