"""Whole words or plain tokens: what calibration's rule keeps on each head, and what each family gives (issue #30).

The default calibration grid scores every setting with whole words (the word-piece exemption at 10, the base
spelling a word's later pieces) and with plain tokens, and keeps the closest feasible whole-word setting unless a
plain one is closer to the reference by more than the two-sample KS test resolves at 5 % (`t3unlearn.t3.grid`).
For each benchmark, split and head seed this trains the packaged head (``t3unlearn unlearn`` defaults, the retain
set ``compare`` uses), calibrates it with the default grid and the split's oracle (never used to choose), and
prints the family kept, the closest feasible setting of each family with its forget quality and privleak against
the oracle, the KS resolution, and the oracle's best within privleak +-15
(docs/notes/2026-12-07-whole-or-plain-words.md):

    python benchmarks/words_rule.py --benchmarks world,world-s104,world-s105 --split forget10 --head-seeds 0,1,2
    T3UNLEARN_TOFU_DIR=../shared/data/tofu python benchmarks/words_rule.py --benchmarks tofu --split forget05 \
        --heads-from compare      # the heads of `t3unlearn compare --benchmark tofu --split forget05 --out compare`

``world-sN`` is the world built with generator seed N (built and its models trained on first use, as
``unseen_worlds.py`` does; its cache under OUT is shared). One torch thread; heads and calibrations are cached
under OUT.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unseen_worlds import cli, parse_common, world_dir


def family(row: dict) -> str:
    s = row["setting"]
    return "whole" if s["piece_floor"] is not None or s["spelling"] == "base" else "plain"


def closest(rows: list[dict], fam: str) -> dict | None:
    ok = [r for r in rows if r["feasible"] and family(r) == fam]
    return min(ok, key=lambda r: (round(r["tr_ks"], 6), r["setting"]["scale"], r["setting"]["temperature"]), default=None)


def compare_head(compare_out: Path, split: str, seed: int) -> Path:
    """The T3 head of ``seed`` that ``t3unlearn compare --out COMPARE_OUT`` trained for ``split``."""
    found = sorted(p for p in (compare_out / split / "artifacts").glob(f"t3-head-*-seed{seed}") if p.is_dir())
    if not found:
        raise SystemExit(f"no T3 head of seed {seed} under {compare_out / split / 'artifacts'}; run compare first.")
    return found[0]


def calibrated(bench_name: str, split: str, seed: int, out: Path, heads_from: Path | None = None, *,
               training: int | None = None, name: str = "cal-words", extra: tuple[str, ...] = ()) -> dict:
    """The calibration (default grid, with the split's oracle) of the T3 head of ``seed``: ``compare``'s (``heads_from``)
    or one trained here; ``training``: the world's model training it belongs to; ``extra``: more calibrate options,
    saved under ``name``."""
    from t3unlearn.benchmarks import get_benchmark

    bench = get_benchmark(bench_name)
    retain = f"retain{100 - int(split[-2:])}"
    models = bench.models(("pretrained", "full", retain), progress=False, **({} if training is None else {"seed": training}))
    retain_source = bench.retain_set(split)[0]
    run = out / f"{Path(bench_name).name}{'' if training is None else f'-t{training}'}-{split}-head{seed}"
    run.mkdir(parents=True, exist_ok=True)
    head = compare_head(heads_from, split, seed) if heads_from else run / "head"
    if not (head / "t3_config.json").is_file():
        cli("unlearn", "--model", str(models["full"]), "--forget", f"{bench_name}:{split}", "--retain", retain_source,
            "--out", str(run / "head"), "--seed", str(seed), "--threads", "1", "--quiet", log=run / "unlearn.log")
    if not (run / name / "t3_config.json").is_file():
        cli("calibrate", "--head", str(head), "--forget", f"{bench_name}:{split}", "--retain", retain_source,
            "--pretrained", str(models["pretrained"]), "--oracle", str(models[retain]), "--seed", str(seed), *extra,
            "--out", str(run / name), "--threads", "1", "--quiet", log=run / f"calibrate-{name}.log")
    return json.loads((run / name / "t3_config.json").read_text())["calibration"]


def line(name: str, cal: dict) -> str:
    def show(r: dict | None) -> str:
        return "none feasible" if r is None else f"KS {r['tr_ks']:.3f}: FQ {r['forget_quality']:.3g}, privleak {r['privleak']:+.1f}"

    c, best = cal["chosen"], cal.get("oracle_best_privleak_within")
    return (f"{name:<24} kept {family(c):<5} {c['label']:<62} | whole {show(closest(cal['rows'], 'whole'))} | plain "
            f"{show(closest(cal['rows'], 'plain'))} | resolution {cal['ks_resolution']:.3f} | oracle's best within "
            f"+-15: {'none' if best is None else format(best['forget_quality'], '.3g')}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--benchmarks", default="world", help="comma-separated: world, world-sN, tofu [world]")
    ap.add_argument("--heads-from", type=Path, default=None, metavar="COMPARE_OUT",
                    help="calibrate the T3 heads 't3unlearn compare --out COMPARE_OUT' trained for the split instead of "
                         "training them here (one benchmark) [train]")
    args, out = parse_common(ap, head_seeds="0,1,2")
    for name in args.benchmarks.split(","):
        bench = world_dir(int(name[len("world-s"):]), out) if name.startswith("world-s") else name
        for seed in (int(x) for x in args.head_seeds.split(",")):
            print(line(f"{name} {args.split} head {seed}", calibrated(bench, args.split, seed, out, args.heads_from)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
