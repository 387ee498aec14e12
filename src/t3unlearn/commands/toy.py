"""``t3unlearn toy``: regenerate the figures that show why tempering is needed."""

from __future__ import annotations

import argparse

from t3unlearn.flags import add_quiet

_DESCRIPTION = """\
Run the theory on worlds where everything is known exactly, and draw it.

Tilting the trained model p by a learned classifier f ~ P(retain | z) unlearns diffuse forget
data, but fails when the forget data is sharply concentrated: the classifier's error is
multiplied by the height of the forget spike ||p_f||_inf. Tempering first, p^(1/T) f^s with
T > 1, shrinks that factor to ||p_f||_inf^(1/T), at the price of a bias on the retained part.

Worlds: K discrete outcomes (one-hot logistic regression), 1-D and 2-D Gaussians with a
narrow forget component (quadratic-feature logistic regression); the exact Bayes classifier
is drawn as a reference. Errors are exact: forget ratio E_{p_f}[p_hat / p_r] (1 = as if never
trained on the forget data), retain KL(p_r || p_hat), TV.
"""

_EPILOG = """\
example:
  t3unlearn toy --out toy_figs                  all figures, 5 seeds (well under a minute)
  t3unlearn toy --out toy_figs --quick          a smaller grid, 2 seeds (a few seconds)

writes (atomically) into --out:
  toy_peak.png              forget error vs forget peak height, T = 1 vs T > 1
  toy_temperature.png       forget error and retain error vs T (point-mass forget data)
  toy_ts_grid.png           both errors over the (T, s) grid
  toy_samples.png           both errors vs training samples per class
  toy_gaussian_density.png  p, p_r and p_hat at T = 1 and T = 2.5, narrow 1-D forget bump
  toy_gaussian_width.png    forget error vs forget width, 1-D and 2-D Gaussians
  toy_gaussian_2d.png       2-D densities: p_r, p, p_hat at T = 1 and T = 2.5
  toy_results.json          every number behind the figures (per seed, mean, std)

Python: from t3unlearn.toy import discrete_world, fit_classifier, t3_estimate, forget_ratio
"""


def register(sub) -> None:
    p = sub.add_parser(
        "toy",
        help="why tempering is needed: exact toy worlds and figures",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the PNGs and toy_results.json")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="seeds per point, drawn as mean ± std bands (default 5; 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="a smaller grid: same picture, a few seconds")
    add_quiet(p, old="--no-progress")
    p.add_argument("--dpi", type=int, default=100, help="PNG resolution (default 100: small, commit-friendly)")
    p.set_defaults(func=run)


def run(args) -> int:
    import time
    from pathlib import Path


    from t3unlearn.errors import T3Error
    from t3unlearn.io import save_json
    from t3unlearn.toy.experiments import ToyConfig, n_ticks, run_all, to_jsonable
    from t3unlearn.toy.figures import FIGURES, save_all

    t0 = time.perf_counter()
    if args.seeds is not None and args.seeds < 1:
        raise T3Error(f"--seeds must be >= 1 (got {args.seeds}).")
    if args.dpi < 20 or args.dpi > 600:
        raise T3Error(f"--dpi must lie in [20, 600] (got {args.dpi}).")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise T3Error(f"--out {out} is a file; give a directory.")
    cfg = ToyConfig.quick(args.seeds) if args.quick else ToyConfig(seeds=5 if args.seeds is None else args.seeds)

    from t3unlearn.progress import progress

    bar = progress(total=n_ticks(cfg) + len(FIGURES), desc="toy", unit="step", enabled=not args.quiet)
    res = run_all(cfg, tick=lambda: bar.update(1))
    bar.set_description("toy: figures")
    paths = save_all(res, out, dpi=args.dpi, tick=lambda: bar.update(1))
    save_json(out / "toy_results.json", _rounded(to_jsonable(res)), indent=None)
    bar.close()
    wall = time.perf_counter() - t0

    s = res["summary"]
    lo, hi = s["peak_lo"], s["peak_hi"]
    print(f"discrete world, forget ratio E_pf[p_hat/p_r] as the peak sharpens {lo:g} -> {hi:g} "
          f"(mean of {cfg.seeds} seeds, n = {cfg.n}, s = 1; 1 = as if never trained on it):")
    for T in cfg.peak_Ts:
        a, b = s[f"forget_ratio_T={T:g}"]
        la, lb = s[f"leak_T={T:g}"]
        print(f"  T = {T:<4g} {a:6.3f} -> {b:6.3f}   (classifier-induced part {la:.3f} -> {lb:.3f}, x{lb / la:.1f})")
    kb = s["retain_kl_best_T"]
    print(f"best T (least T with forget ratio <= 1 at peak {hi:g}): {s['best_T']:g}; forget ratio "
          f"{s['forget_ratio_best_T']:.3f}; retain KL {kb['estimated']:.4f} (exact classifier: {kb['exact']:.4f})")
    if "retain_kl_T=1" in s:
        k1 = s["retain_kl_T=1"]
        print(f"at T = 1: forget ratio {s['forget_ratio_T=1_sharp']:.3f}; retain KL {k1['estimated']:.4f} "
              f"(exact classifier: {abs(k1['exact']):.1e})")
    for d in (1, 2):
        w0, w1 = s[f"gauss{d}d_widths"]
        parts = ", ".join(f"{k}: {a:.2f} -> {b:.2f}" for k, (a, b) in s[f"gauss{d}d_forget_ratio"].items())
        print(f"{d}-D Gaussians, forget ratio as the forget width shrinks {w0:g} -> {w1:g}: {parts}")
    print(f"wrote {len(paths)} figures and toy_results.json to {out}/")
    print(f"wall time: {wall:.1f} s")
    return 0


def _rounded(obj, digits: int = 5):
    """Floats rounded to ``digits`` significant digits (smaller JSON; NaN/inf as null)."""
    import math

    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}") if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v, digits) for v in obj]
    return obj
