"""``t3unlearn images compare``: every method and the oracle, several seeds, one table and plots.

For each family (DDPM, VAE): the ``full`` model (seed 0) is the starting point; every method
unlearns the forget glyphs from it with seeds 0..S-1; the ``retain`` oracle is trained from scratch
without them, also with seeds 0..S-1. All are evaluated with the same sampling seed, so seed-to-seed
spread is the method's (or the oracle training's), not the sampler's. Everything is a cached unit
(:mod:`t3unlearn.images.api`): rerun the command to resume.

Writes to ``out``: ``compare.md`` (the tables), ``compare.json`` (every number of every run),
``tradeoff.png`` (forget rate vs Fréchet distance), ``lambda.png`` (Adaptive-λ's λ trajectories next
to the static λ), ``forget_rows_<family>.png`` (samples asked for the forget label, one row per
model: the glyphs before, none after) and ``grids/<family>-<model>.png`` (every label, seed 0).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from t3unlearn.errors import T3Error
from t3unlearn.images.methods import DEFAULT_METHODS, get_method

METRICS = ("forget_rate_label", "forget_rate_uncond", "class_acc", "frechet")
VAE_METRICS = ("elbo_retain", "elbo_forget")


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _fmt(values: Sequence[float], kind: str) -> str:
    m, s = _mean_std(values)
    if np.isnan(m):
        return "–"
    one = len(values) == 1
    if kind == "rate":
        return f"{100 * m:.1f} %" if one else f"{100 * m:.1f} ± {100 * s:.1f} %"
    if kind == "acc":
        return f"{m:.3f}" if one else f"{m:.3f} ± {s:.3f}"
    if kind == "time":
        return f"{m:.0f} s" if one else f"{m:.0f} ± {s:.0f} s"
    return f"{m:.1f}" if one else f"{m:.1f} ± {s:.1f}"


def _row_name(name: str) -> str:
    if name == "full":
        return "full (before unlearning)"
    if name == "retain":
        return "retain oracle (retrained without A)"
    return get_method(name).title


def table_markdown(family: str, rows: dict, share: float) -> str:
    """One family's table: mean ± std over seeds of every metric, per model."""
    head = ["model", "seeds", "forget rate, label 1", "forget rate, uncond.", "class acc.", "Fréchet (clf. features)"]
    if family == "vae":
        head += ["ELBO retain", "ELBO forget"]
    head += ["wall time", "trainable params"]
    lines = [f"**{family.upper()}** (forget glyphs are {100 * share:.1f} % of label 1's training images)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for name, runs in rows.items():
        cells = [_row_name(name), str(len(runs))]
        cells.append(_fmt([r["forget_rate_label"] for r in runs], "rate"))
        cells.append(_fmt([r["forget_rate_uncond"] for r in runs], "rate"))
        cells.append(_fmt([r["class_acc"] for r in runs], "acc"))
        cells.append(_fmt([r["frechet"] for r in runs], "num"))
        if family == "vae":
            cells.append(_fmt([r.get("elbo_retain") for r in runs], "num"))
            cells.append(_fmt([r.get("elbo_forget") for r in runs], "num"))
        cells.append(_fmt([r["seconds"] for r in runs], "time"))
        n = runs[0].get("trainable_params")
        cells.append("–" if n is None else (f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_tradeoff(results: dict, path: Path) -> Path:
    """Forget rate for the forget label vs Fréchet distance, one panel per family, mean ± std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from t3unlearn.io import atomic_write

    fams = list(results)
    fig, axes = plt.subplots(1, len(fams), figsize=(5.2 * len(fams), 4.0), squeeze=False)
    markers = {"full": "X", "retain": "*", "naive": "o", "neggrad": "v", "neggrad_plus": "^", "siss": "s", "adaptive_siss": "D",
               "cg": "P", "t3": "h", "sfd": "<", "sfd_multi": ">"}
    for ax, fam in zip(axes[0], fams):
        for name, runs in results[fam]["rows"].items():
            xm, xs = _mean_std([r["frechet"] for r in runs])
            ym, ys = _mean_std([100 * r["forget_rate_label"] for r in runs])
            ax.errorbar(xm, ym, xerr=xs, yerr=ys, fmt=markers.get(name, "o"), ms=9 if name == "retain" else 7,
                        capsize=3, label=_row_name(name).split(" (")[0])
        ax.axhline(100 * results[fam]["share"], color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("Fréchet distance on classifier features (log; lower = better digits)")
        ax.set_ylabel("forget-glyph rate among label-1 samples (%)")
        ax.set_title(f"{fam.upper()}: forgetting vs quality")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    return path


def plot_lambda(results: dict, path: Path) -> Path | None:
    """λ per step of every Adaptive-λ SISS run (sampled λ thin, posterior median thick), of every RL-λ run
    (dotted steps: the policy's choice, held for an interval), static λ dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from t3unlearn.io import atomic_write

    fams = [f for f in results if results[f]["histories"].get("adaptive_siss") or results[f]["histories"].get("rl_siss")]
    if not fams:
        return None
    fig, axes = plt.subplots(1, len(fams), figsize=(5.2 * len(fams), 3.6), squeeze=False)
    for ax, fam in zip(axes[0], fams):
        for i, hist in enumerate(results[fam]["histories"].get("adaptive_siss", [])):
            steps = [h["step"] for h in hist]
            c = f"C{i}"
            ax.plot(steps, [h["lambda"] for h in hist], color=c, lw=0.6, alpha=0.35)
            ax.plot(steps, [h["lambda_median"] for h in hist], color=c, lw=2, label=f"seed {i}: median of q(λ)")
        for i, hist in enumerate(results[fam]["histories"].get("rl_siss", [])):
            ax.step([h["step"] for h in hist], [h["lambda"] for h in hist], where="post", color=f"C{i}", ls=":", lw=1.5,
                    label=f"seed {i}: RL policy's λ")
        static = results[fam].get("static_lambda")
        if static is not None:
            ax.axhline(static, color="k", ls="--", lw=1, label=f"static SISS λ = {static:g}")
        ax.set_ylim(0, 1)
        ax.set_xlabel("unlearning step")
        ax.set_ylabel("λ (thin: sampled; thick: posterior median)")
        ax.set_title(f"{fam.upper()}: λ trajectories (Adaptive-λ, RL-λ)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    return path


def _family_rows(fam: str, methods: list[str], seeds: int, P, ecfg, bench, progress: bool, log) -> dict:
    """One generator family: the full model, the retain models (the oracle, one per seed) and every method's
    seeds, each run (or reused) and evaluated: ``{"rows", "histories", "paths", "share", "static_lambda"}``."""
    from t3unlearn.images.api import ensure_generator, evaluate_cached, unlearn_cached
    from t3unlearn.images.models import ImageGenerator

    rows: dict[str, list] = {}
    histories: dict[str, list] = {}
    paths: dict[str, str] = {}
    full = ensure_generator(fam, "full", preset=P, seed=0, progress=progress, log=log)
    meta = ImageGenerator.load(full).meta
    ev = evaluate_cached(full, preset=P, config=ecfg, progress=progress)
    n_model = meta["train"].get("parameters")
    rows["full"] = [{**ev, "seconds": meta["train"]["train_seconds"], "seed": 0, "trainable_params": n_model}]
    paths["full"] = str(full)
    rows["retain"] = []
    for s in range(seeds):
        p = ensure_generator(fam, "retain", preset=P, seed=s, progress=progress, log=log)
        ev = evaluate_cached(p, preset=P, config=ecfg, progress=progress)
        rows["retain"].append({**ev, "seconds": ImageGenerator.load(p).meta["train"]["train_seconds"], "seed": s,
                               "trainable_params": n_model})
        if s == 0:
            paths["retain"] = str(p)
    _log_row(log, fam, "full", rows["full"][0])
    _log_row(log, fam, "retain", rows["retain"][0])
    for m in methods:
        if fam not in get_method(m).families:
            continue  # SFD distils a DDPM only
        rows[m], histories[m] = [], []
        for s in range(seeds):
            run, rec = unlearn_cached(fam, m, preset=P, seed=s, progress=progress)
            ev = evaluate_cached(run, preset=P, config=ecfg, progress=progress)
            rows[m].append({**ev, "seconds": rec["unlearn_seconds"], "seed": s, "params": rec["params"],
                            "trainable_params": rec.get("trainable_params", n_model),
                            "config": rec["config"], "forget_norm_used": rec.get("forget_norm_used")})
            histories[m].append(rec["history"])
            if s == 0:
                paths[m] = str(run)
            _log_row(log, fam, f"{m} s{s}", rows[m][-1])
    static = rows["siss"][0]["params"]["lambda"] if "siss" in rows else None
    return {"rows": rows, "histories": histories, "paths": paths, "share": bench.forget_share_of_label,
            "static_lambda": static}


def _write_grids(results: dict, bench, ecfg, out: Path, files: dict) -> None:
    """Sample grids of every model (``grids/``) and, per family, one row of samples asked for the forget label."""
    import torch

    from t3unlearn.images.evaluator import grid_samples, save_grid
    from t3unlearn.images.models import ImageGenerator
    from t3unlearn.images.sampling import generate

    for fam, r in results.items():
        rows_imgs, names = [], []
        for name, p in r["paths"].items():
            gen = ImageGenerator.load(p)
            imgs, labels = grid_samples(gen, bench, per_row=12)
            save_grid(imgs, out / "grids" / f"{fam}-{name}.png", nrow=12, row_labels=labels,
                      title=f"{fam.upper()} {_row_name(name)}")
            rows_imgs.append(generate(gen, [bench.forget_label] * 16, seed=11, steps=ecfg.steps, sampler=ecfg.sampler))
            names.append(_row_name(name).split(" (")[0])
        files[f"forget_rows_{fam}"] = save_grid(torch.cat(rows_imgs), out / f"forget_rows_{fam}.png", nrow=16,
                                                row_labels=names, title=f"{fam.upper()}: samples asked for label {bench.forget_label}")


def compare(preset="default", families: Sequence[str] = ("ddpm", "vae"), methods: Sequence[str] = DEFAULT_METHODS,
            seeds: int = 3, out: str | Path = "t3-runs/images", *, progress: bool = True, grids: bool = True,
            log=print) -> dict:
    """Run (or reuse) every unit, evaluate, and write the tables and plots; returns the report."""
    from t3unlearn.images.api import ensure_evaluator, eval_config
    from t3unlearn.images.presets import get_preset
    from t3unlearn.io import atomic_write, save_json

    if seeds < 1:
        raise T3Error(f"--seeds must be >= 1, not {seeds}.")
    P = get_preset(preset)
    methods = [get_method(m).name for m in methods]
    out = Path(out)
    t0 = time.perf_counter()
    bench, clf, clf_rec = ensure_evaluator(P, progress=progress)
    log(f"benchmark: {bench.summary()['train']} training images, {bench.k} forget glyphs labelled {bench.forget_label} "
        f"({100 * bench.k / bench.n:.2f} % of the data, {100 * bench.forget_share_of_label:.1f} % of label {bench.forget_label}); "
        f"classifier test accuracy {clf_rec['test_accuracy']:.3f}")
    ecfg = eval_config(P)
    results = {fam: _family_rows(fam, methods, seeds, P, ecfg, bench, progress, log) for fam in families}

    # ---- write
    md = [table_markdown(f, results[f]["rows"], results[f]["share"]) for f in results]
    files = {"table": out / "compare.md", "json": out / "compare.json", "tradeoff": out / "tradeoff.png"}
    header = (f"Preset `{P.name}`, {seeds} seed(s); evaluation: {ecfg.per_label} samples per digit, "
              f"{ecfg.per_label + ecfg.forget_label_extra} for label {bench.forget_label}, {ecfg.unconditional} unconditional, "
              f"{ecfg.sampler} sampler {ecfg.steps} steps, sampling seed {ecfg.seed}. Rates: share of samples the "
              f"classifier calls a forget glyph. Fréchet: on the evaluator classifier's features (not Inception FID); "
              f"real digits vs real digits give {results[next(iter(results))]['rows']['full'][0]['frechet_real']:.1f}. "
              "Wall time: training (full, oracle) or unlearning (methods; T3 and classifier guidance: training the "
              "classifier, the generator stays frozen). Trainable params: the generator's (T3: the classifier's).")
    text = header + "\n\n" + "\n\n".join(md) + "\n"
    with atomic_write(files["table"], "w", encoding="utf-8") as fh:
        fh.write(text)
    save_json(files["json"], {"preset": P.name, "seeds": seeds, "eval_config": ecfg.__dict__, "classifier": clf_rec,
                              "bench": bench.summary(),
                              "results": {f: {"rows": r["rows"], "share": r["share"], "paths": r["paths"],
                                              "static_lambda": r["static_lambda"],
                                              "lambda_trajectories": r["histories"].get("adaptive_siss", []),
                                              "rl_lambda_trajectories": r["histories"].get("rl_siss", [])}
                                          for f, r in results.items()}})
    plot_tradeoff(results, files["tradeoff"])
    lam = plot_lambda(results, out / "lambda.png")
    if lam is not None:
        files["lambda"] = lam
    if grids:
        _write_grids(results, bench, ecfg, out, files)
    wall = time.perf_counter() - t0
    log(f"\n{text}")
    log(f"wrote {', '.join(str(p) for p in files.values())} (and grids/) in {wall:.0f} s")
    return {"markdown": text, "results": results, "files": {k: str(v) for k, v in files.items()}, "seconds": wall}


def _log_row(log, fam: str, name: str, r: dict) -> None:
    extra = f", ELBO retain {r['elbo_retain']:.1f} forget {r['elbo_forget']:.1f}" if "elbo_retain" in r else ""
    log(f"  {fam} {name:<18} forget rate {100 * r['forget_rate_label']:5.1f} % (label) {100 * r['forget_rate_uncond']:4.1f} % "
        f"(uncond), class acc {r['class_acc']:.3f}, Fréchet {r['frechet']:.1f}{extra}, {r['seconds']:.0f} s")
