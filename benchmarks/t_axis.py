"""Does calibration gain from going on up the T axis while its choice sits at the top? (issue #30; not adopted)

The default grid stops at T = 2.5, and on the world's and TOFU's forget10 development heads the rule's choice sits
there. This calibrates each head with the default grid's T axis extended (2.75, 3, 3.5, 4, 5) and the split's oracle
(never used to choose), then reads two choices off the same rows:

- *before*: the packaged rule over the default grid's rows (T <= 2.5);
- *raised*: the rule again while its choice has the largest T scored so far, one more T at a time (the mechanism
  tried at commit ``b6e6aa2`` and reverted: every row scores alike whatever else the grid holds, so this is its
  choice);

each with forget quality and privleak against the oracle on the calibration holdout, and the oracle's best within
privleak +-15 (docs/notes/2026-12-07-the-t-axis-and-reworded-heads.md):

    python benchmarks/t_axis.py world --split forget10 --heads-from t3-runs/compare              # compare's heads
    python benchmarks/t_axis.py world --split forget10 --heads-from t3-runs/compare --training 2   # another training's
    T3UNLEARN_TOFU_DIR=../shared/data/tofu python benchmarks/t_axis.py tofu --split forget05 --heads-from compare
    python benchmarks/t_axis.py world-s104 --split forget05 --out unseen-worlds      # heads trained here (words_rule's)

One torch thread; calibrations are cached under OUT.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from unseen_worlds import world_dir
from words_rule import calibrated

DEFAULT_TOP = 2.5
ABOVE = (2.75, 3.0, 3.5, 4.0, 5.0)


def rows_of(cal: dict) -> list:
    from t3unlearn.t3.calibrate import CalibrationRow
    from t3unlearn.t3.config import Guidance

    out = []
    for d in cal["rows"]:
        d = {k: v for k, v in d.items() if k != "label"}
        out.append(CalibrationRow(**{**d, "setting": Guidance(**d["setting"])}))
    return out


def choices(rows: list, cal: dict):
    """``(before, raised, top)``: the rule over the default grid's rows; the rule again with each next T while its
    choice has the largest T so far (and is feasible); the largest T that took."""
    from t3unlearn.t3.grid import choose

    def pick(top):
        return choose([r for r in rows if r.setting.temperature <= top], cal["tolerance"], cal["mia_tolerance"],
                      cal["ks_resolution"])

    top = DEFAULT_TOP
    before = chosen = pick(top)
    for t in ABOVE:
        if not chosen.feasible or chosen.setting.temperature != top:
            break
        top, chosen = t, pick(t)
    return before, chosen, top


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("benchmark", help="world, world-sN (built under --out) or tofu")
    ap.add_argument("--split", default="forget10")
    ap.add_argument("--head-seeds", default="0,1,2")
    ap.add_argument("--heads-from", type=Path, default=None, metavar="COMPARE_OUT",
                    help="the T3 heads of 't3unlearn compare --out COMPARE_OUT' (with --training: "
                         "COMPARE_OUT/SPLIT/training-T's) [train them here]")
    ap.add_argument("--training", type=int, default=None, help="the world's model training the heads belong to [the shipped models]")
    ap.add_argument("--out", type=Path, default=Path("t3-runs/t-axis"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    bench = world_dir(int(args.benchmark[len("world-s"):]), args.out) if args.benchmark.startswith("world-s") else args.benchmark
    heads_from = args.heads_from
    if heads_from is not None and args.training is not None:  # compare --trainings keeps each training's heads apart
        heads_from = args.out / f"training-{args.training}"
        heads_from.mkdir(exist_ok=True)
        link = heads_from / args.split
        if not link.exists():
            link.symlink_to((args.heads_from / args.split / f"training-{args.training}").resolve())

    def show(r) -> str:
        return f"{r.setting.label():<60} FQ {r.forget_quality:9.3g}  privleak {r.privleak:+6.1f}  KS {r.tr_ks:.4f}"

    for seed in (int(s) for s in args.head_seeds.split(",")):
        temps = ",".join(f"{t:g}" for t in (1, 1.5, 1.75, 2, 2.25, DEFAULT_TOP, *ABOVE))
        cal = calibrated(bench, args.split, seed, args.out, heads_from, training=args.training, name="cal-t-axis",
                         extra=("--temperatures", temps))
        rows = rows_of(cal)
        before, raised, top = choices(rows, cal)
        best = cal.get("oracle_best_privleak_within")
        print(f"{args.benchmark} {args.split} head {seed}: before {show(before)} | raised (T to {top:g}) {show(raised)} | "
              f"oracle's best within +-15: {best['forget_quality'] if best else float('nan'):.3g}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
