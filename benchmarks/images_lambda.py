"""The λ ablation: static λ (0, 0.5, small), fixed schedules, SISS without importance sampling, Adaptive-λ.

    python benchmarks/images_lambda.py --families vae --seeds 1,2,3,4,5 --out t3-runs/lambda
    python benchmarks/images_lambda.py --report --out t3-runs/lambda     # tables + figure from what is done

Seed 0 is the tuning seed: the "best fixed schedule" is chosen on it among the candidates (lowest
classifier forget rate among those whose class accuracy is within 0.02 of the full model's; ties: lower
Fréchet) and seed 0 is left out of every reported row. Every unit (family, arm, seed) is appended to
``results.jsonl`` in ``--out`` as it finishes, so a rerun resumes. Every run uses the preset's SISS
settings (steps, batch, learning rate; the forget gradient rescaled to 10 % of the first step's retain
norm every step); rows differ only in how λ is set.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ARMS = {  # name -> (method, params)
    "λ = 0": ("siss", {"lambda": 0.0}),
    "λ = 0.5": ("siss", {"lambda": 0.5}),
    "λ = 0.02": ("siss", {"lambda": 0.02}),
    "decay 0.5 → 0.001": ("siss", {"lambda": 0.5, "lambda_end": 0.001}),
    "decay 0.5 → 0.02": ("siss", {"lambda": 0.5, "lambda_end": 0.02}),
    "no importance sampling": ("siss_no_is", {}),
    "Adaptive-λ (variance)": ("adaptive_siss", {}),
}
CANDIDATES = ("λ = 0.5", "λ = 0.02", "decay 0.5 → 0.001", "decay 0.5 → 0.02")  # the fixed schedules
REPORTED = ("Adaptive-λ (variance)", "BEST", "λ = 0.5", "λ = 0.02", "λ = 0", "no importance sampling")


def _load(out: Path) -> list[dict]:
    f = out / "results.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.exists() else []


def _best(rows: list[dict], family: str, tune_seed: int, candidates=CANDIDATES) -> str | None:
    full = [r for r in rows if r["family"] == family and r["arm"] == "full"]
    cand = [r for r in rows if r["family"] == family and r["seed"] == tune_seed and r["arm"] in candidates]
    if not full or len(cand) < len(candidates):
        return None
    ok = [r for r in cand if r["class_acc"] >= full[0]["class_acc"] - 0.02] or cand
    return min(ok, key=lambda r: (r["forget_clf"], r["frechet"]))["arm"]


def measurement(args):
    """What both image benchmarks measure with: ``(out, preset, bench, classifier, geometry detector, done,
    record)``; ``done`` holds the (family, arm, seed) rows already in ``out/results.jsonl``, ``record(row)``
    appends one, marks it done and prints it."""
    import torch

    torch.set_num_threads(args.threads)
    from t3unlearn.images import api
    from t3unlearn.images.measure import GeometryDetector
    from t3unlearn.images.presets import get_preset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    P = get_preset(args.preset)
    bench = api.load_bench(P)
    clf = api.ensure_evaluator(P, progress=False)[1]
    det = GeometryDetector.fit(bench)
    done = {(r["family"], r["arm"], r["seed"]) for r in _load(out)}

    def record(row):
        with open(out / "results.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        done.add((row["family"], row["arm"], row["seed"]))
        print(f"{row['family']:4s} {row['arm']:24s} s{row['seed']}  clf {100 * row['forget_clf']:5.2f} %  "
              f"geo {100 * row['forget_geo']:5.2f} %  acc {row['class_acc']:.3f}  Fréchet {row['frechet']:6.1f}  "
              f"{row.get('seconds', 0):5.0f} s", flush=True)

    return out, P, bench, clf, det, done, record


def run(args) -> None:
    from t3unlearn.images import api
    from t3unlearn.images.measure import measure_generator
    from t3unlearn.images.models import ImageGenerator
    from t3unlearn.images.trainer import unlearn

    out, P, bench, clf, det, done, record = measurement(args)
    for fam in args.families:
        n_forget = args.n_forget if fam == "vae" else args.n_forget_ddpm
        per_label = args.per_label if fam == "vae" else args.per_label_ddpm
        mkw = dict(n_forget=n_forget, per_label=per_label, steps=int(P.eval.get("steps", 30)))
        full = ImageGenerator.load(api.ensure_generator(fam, "full", preset=P, progress=False))
        if (fam, "full", 0) not in done:
            record({"family": fam, "arm": "full", "seed": 0, **measure_generator(full, bench, clf, det, **mkw)})
        for r in range(1, args.resample_full + 1):  # the same model, other sampling seeds: the metrics' sampling noise
            if (fam, "full (resampled)", r) not in done:
                record({"family": fam, "arm": "full (resampled)", "seed": r,
                        **measure_generator(full, bench, clf, det, seed=4321 + 1000 * r, **mkw)})
        cfg, par = P.unlearn_settings(fam, "siss")
        traces = out / f"traces-{fam}.jsonl"

        def unit(arm, seed):
            if (fam, arm, seed) in done:
                return
            method, extra = ARMS[arm]
            t0 = time.perf_counter()
            gen, rec = unlearn(full, bench, method, params={**par, **extra}, config={**cfg, "seed": seed}, progress=False)
            secs = time.perf_counter() - t0
            keys = ("lambda", "lambda_median", "lambda_batch_opt", "dlogS_dlambda", "forget_scale",
                    "ctx_retain_loss", "ctx_forget_loss", "ctx_grad_retain", "ctx_grad_forget")
            with open(traces, "a") as f:
                f.write(json.dumps({"arm": arm, "seed": seed, "history": [{k: h[k] for k in keys if k in h}
                                                                          for h in rec["history"]]}) + "\n")
            record({"family": fam, "arm": arm, "seed": seed, "seconds": secs, **measure_generator(gen, bench, clf, det, **mkw)})

        for arm in args.candidates + ("Adaptive-λ (variance)",):
            unit(arm, args.tune_seed)
        best = _best(_load(out), fam, args.tune_seed, args.candidates)
        print(f"{fam}: best fixed schedule on tuning seed {args.tune_seed}: {best}", flush=True)
        arms = [best if a == "BEST" else a for a in REPORTED if a != "BEST" or best]
        arms = [a for i, a in enumerate(arms) if a not in arms[:i] and a in args.arms_allowed]
        for seed in args.seeds:
            for arm in arms:
                unit(arm, seed)


def _floors(args, rows) -> None:
    """The measurement's noise floors: the geometry detector's held-out error rates, and the Fréchet distance of
    as many real digits as the rows' class-conditional samples (what a perfect generator scores)."""
    import torch

    torch.set_num_threads(args.threads)
    from t3unlearn.images import api
    from t3unlearn.images.measure import GeometryDetector, frechet_floor

    P = args.preset
    bench = api.load_bench(P)
    clf = api.ensure_evaluator(P, progress=False)[1]
    det = GeometryDetector.fit(bench)
    print(f"geometry detector: ink area > {det.threshold:.3f} (share of pixels above {det.ink}); held out: "
          f"{100 * det.false_positive_rate:.1f} % of real label-1 digits and {100 * det.true_positive_rate:.1f} % of glyphs "
          f"called glyphs")
    for n in sorted({10 * r["per_label"] for r in rows if "per_label" in r}):
        m, sd = frechet_floor(bench, clf, n)
        print(f"Fréchet noise floor: {n} real retain digits vs the {len(bench.test)} held-out digits: {m:.1f} ± {sd:.1f} "
              f"(mean ± sd over 5 resamples)")


def report(args) -> None:
    from t3unlearn.images.measure import binomial_interval, t_interval

    out = Path(args.out)
    rows = _load(out)
    _floors(args, rows)
    for fam in ("ddpm", "vae"):
        fr = [r for r in rows if r["family"] == fam]
        if not fr:
            continue
        cands = tuple(a for a in CANDIDATES if any(r["arm"] == a and r["seed"] == args.tune_seed for r in fr))
        best = _best(rows, fam, args.tune_seed, cands)
        full = [r for r in fr if r["arm"] == "full"][0]
        lo, hi = binomial_interval(full["k_clf"], full["n_forget"])
        print(f"\n**{fam.upper()}**: {full['n_forget']} samples of label 1 per model, {full['per_label']} per digit for "
              f"accuracy and Fréchet; best fixed schedule on tuning seed {args.tune_seed}: {best}; rows: seeds "
              f"{sorted({r['seed'] for r in fr if r['seed'] != args.tune_seed and r['arm'] != 'full'})}, "
              f"mean ± 95 % t-interval half-width.\n")
        print(f"full model (before unlearning): classifier {100 * full['forget_clf']:.2f} % (95 % Wilson interval "
              f"{100 * lo:.2f}–{100 * hi:.2f} %), geometry {100 * full['forget_geo']:.2f} %, accuracy "
              f"{full['class_acc']:.3f}, Fréchet {full['frechet']:.1f}\n")
        res = [full] + [r for r in fr if r["arm"] == "full (resampled)"]
        if len(res) > 1:
            def sd(key, scale=1.0):
                import numpy as np

                return float(np.std([scale * r[key] for r in res], ddof=1))

            print(f"sampling noise of one model ({len(res)} sampling seeds of the full model): sd of the forget rate "
                  f"{sd('forget_clf', 100):.2f} points (classifier), {sd('forget_geo', 100):.2f} (geometry); accuracy "
                  f"{sd('class_acc'):.3f}; Fréchet {sd('frechet'):.1f}\n")
        print("| λ | seeds | forget rate, classifier | forget rate, geometry | class acc. | Fréchet | wall time |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for arm in ARMS:
            rs = [r for r in fr if r["arm"] == arm and r["seed"] != args.tune_seed]
            if not rs:
                continue

            def f(key, scale=1.0, digits=2):
                m, h = t_interval([scale * r[key] for r in rs])
                return f"{m:.{digits}f} ± {h:.{digits}f}" if not math.isnan(h) else f"{m:.{digits}f}"

            name = arm + (" (best fixed, chosen on seed %d)" % args.tune_seed if arm == best else "")
            print(f"| {name} | {len(rs)} | {f('forget_clf', 100)} % | {f('forget_geo', 100)} % | {f('class_acc', 1, 3)} | "
                  f"{f('frechet', 1, 1)} | {f('seconds', 1, 0)} s |")
        if best:
            _paired(fr, best, args.tune_seed)
        _paired(fr, "Adaptive-λ (variance)", args.tune_seed, reverse=True)
    if args.figure:
        plot(out, Path(args.figure), args.tune_seed)


def _paired(fr: list[dict], best: str, tune_seed: int, reverse: bool = False) -> None:
    """Each arm minus ``best`` on the same seeds (``reverse``: ``best`` minus each arm): paired differences and
    their 95 % t-intervals, in percentage points of the forget rate and in Fréchet."""
    from t3unlearn.images.measure import t_interval

    ref = {r["seed"]: r for r in fr if r["arm"] == best and r["seed"] != tune_seed}
    sign = -1.0 if reverse else 1.0
    what = f"{best} minus each arm" if reverse else f"each arm minus the best fixed schedule ({best})"
    print(f"\npaired differences, {what}, same seeds; 95 % t-intervals:\n")
    print("| λ | seeds | Δ forget rate, classifier (points) | Δ forget rate, geometry (points) | Δ Fréchet |")
    print("|---|---:|---:|---:|---:|")
    for arm in ARMS:
        rs = [r for r in fr if r["arm"] == arm and r["seed"] in ref]
        if arm == best or len(rs) < 2:
            continue
        cells = []
        for key, scale, digits in (("forget_clf", 100, 2), ("forget_geo", 100, 2), ("frechet", 1, 1)):
            m, h = t_interval([sign * scale * (r[key] - ref[r["seed"]][key]) for r in rs])
            cells.append(f"{m:+.{digits}f} ± {h:.{digits}f}")
        print(f"| {arm} | {len(rs)} | " + " | ".join(cells) + " |")


def plot(out: Path, path: Path, tune_seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fams = [f for f in ("ddpm", "vae") if (out / f"traces-{f}.jsonl").exists()]
    fig, axes = plt.subplots(2, len(fams), figsize=(5.5 * len(fams), 7), squeeze=False)
    for j, fam in enumerate(fams):
        traces = [json.loads(x) for x in (out / f"traces-{fam}.jsonl").read_text().splitlines() if x.strip()]
        ada = [t for t in traces if t["arm"].startswith("Adaptive") and t["seed"] != tune_seed]
        ax, ax2 = axes[0][j], axes[1][j]
        for i, t in enumerate(ada):
            h = t["history"]
            lam = [x["lambda_median"] for x in h]
            ax.plot(lam, lw=1, color=f"C{i}", label=f"Adaptive-λ, seed {t['seed']}")
            opt = np.array([x["lambda_batch_opt"] for x in h])
            k = 10
            ax.plot(np.convolve(opt, np.ones(k) / k, mode="valid"), lw=0.8, ls=":", color=f"C{i}")
            feat = np.array([math.log(x["ctx_grad_forget"] / x["ctx_grad_retain"]) for x in h])
            ax2.scatter(feat, lam, s=4, color=f"C{i}", alpha=0.6)
        for t in traces:
            if t["arm"].startswith("decay") and t["seed"] == tune_seed:
                ax.plot([x["lambda"] for x in t["history"]], color="k", lw=1, ls="--", alpha=0.5)
        ax.set_yscale("log")
        ax.set_title(f"{fam.upper()}: λ (posterior median, solid); batch's variance-optimal λ (dotted, 10-step mean);"
                     "\nfixed decays (dashed)", fontsize=8)
        ax.set_xlabel("step")
        ax.set_ylabel("λ")
        ax.legend(fontsize=7)
        ax2.set_yscale("log")
        ax2.set_xlabel("input: log(||∇ forget loss|| / ||∇ retain loss||), measured at that step")
        ax2.set_ylabel("λ chosen")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nfigure: {path}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="vae,ddpm")
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--tune-seed", type=int, default=0)
    ap.add_argument("--arms", default="all", help="comma-separated arm names to run on the reported seeds (default all)")
    ap.add_argument("--candidates", default=",".join(CANDIDATES),
                    help="the fixed schedules the best one is chosen from on the tuning seed")
    ap.add_argument("--n-forget", type=int, default=5000, help="label-1 samples per VAE model")
    ap.add_argument("--n-forget-ddpm", type=int, default=1500, help="label-1 samples per DDPM model (30 steps each)")
    ap.add_argument("--per-label", type=int, default=200)
    ap.add_argument("--per-label-ddpm", type=int, default=50)
    ap.add_argument("--resample-full", type=int, default=0, help="also measure the full model with this many other sampling seeds")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="t3-runs/lambda")
    ap.add_argument("--report", action="store_true", help="print the tables (and --figure) from the results so far")
    ap.add_argument("--figure", default=None)
    args = ap.parse_args(argv)
    args.families = [f for f in args.families.split(",") if f]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.candidates = tuple(a.strip() for a in args.candidates.split(",") if a.strip())
    if not set(args.candidates) <= set(CANDIDATES):
        print(f"candidates must be among: {', '.join(CANDIDATES)}", file=sys.stderr)
        return 2
    args.arms_allowed = set(ARMS) if args.arms == "all" else {a.strip() for a in args.arms.split(",")}
    if args.tune_seed in args.seeds:
        print("the tuning seed must not be among the reported seeds", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    report(args) if args.report else run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
