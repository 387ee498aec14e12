"""How close is each candidate calibration reference to the oracle's forget truth ratios? (issue #30)

For a world (the default one, or one built with another generator seed by ``unseen_worlds.py``) or offline TOFU,
the truth ratios of the pretrained checkpoint, the full model and the oracle (retainXX) on the forget authors and
on the never-seen calibration authors (TOFU's get perturbed answers from ``tofu_perturbations.py``, a candidate),
each with its median and its KS distance (and p-value) to the oracle's truth ratios on the forget authors: what
forget quality would read if a guided model matched that reference exactly.
The oracle's row on the calibration authors shows how far two sets of 20 never-seen authors lie apart.

    python benchmarks/reference_truth_ratios.py                      # the default world
    python benchmarks/reference_truth_ratios.py unseen-worlds/world-s101
    T3UNLEARN_TOFU_DIR=../shared/data/tofu python benchmarks/reference_truth_ratios.py tofu --split forget05
"""

from __future__ import annotations

import argparse


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("world", nargs="?", default="world", help="world (the default), a world directory, or tofu [world]")
    ap.add_argument("--split", default="forget10", help="the forget split whose authors are read [forget10]")
    args = ap.parse_args()
    import numpy as np
    import torch
    from scipy.stats import ks_2samp

    from t3unlearn.benchmarks import get_benchmark
    from t3unlearn.eval.runner import retain_split, truth_ratios
    from t3unlearn.lm import load_lm

    torch.set_num_threads(1)
    bench = get_benchmark(args.world)
    retain = retain_split(args.split)
    calibration = bench.qa("calibration")
    if bench.kind == "tofu":  # TOFU's calibration authors have no perturbed answers: the candidate's
        from datasets import Dataset
        from tofu_perturbations import with_perturbations

        from t3unlearn.tofu import ITEMS_PER_AUTHOR

        calibration = Dataset.from_list(with_perturbations(calibration.to_list(), ITEMS_PER_AUTHOR))
    sets = {"forget": bench.qa(f"{args.split}_perturbed"), "calibration": calibration}
    models = bench.models(("pretrained", "full", retain), progress=False)
    tr = {(name, s): np.array(truth_ratios(load_lm(str(models[name])), items, batch_size=32))
          for name in ("pretrained", "full", retain) for s, items in sets.items()}
    oracle = tr[(retain, "forget")]
    print(f"{bench.label}: truth ratios against the oracle's ({retain}) on the {args.split} authors")
    print(f"{'model':<11} {'items':<12} {'median':>7} {'KS':>6} {'p':>9}")
    for (name, s), v in tr.items():
        ks = ks_2samp(v, oracle)
        print(f"{name:<11} {s:<12} {np.median(v):7.3f} {ks.statistic:6.3f} {ks.pvalue:9.2g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
