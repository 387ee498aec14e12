"""How close is each candidate calibration reference to the oracle's forget truth ratios? (issue #30)

For a world (the default one, or one built with another generator seed by ``unseen_worlds.py``), the truth ratios
of the pretrained checkpoint, the full model and the oracle (retain90) on the forget10 authors and on the
never-seen calibration authors, each with its median and its KS distance (and p-value) to the oracle's truth
ratios on the forget authors: what forget quality would read if a guided model matched that reference exactly.
The oracle's row on the calibration authors shows how far two sets of 20 never-seen authors lie apart.

    python benchmarks/reference_truth_ratios.py                      # the default world
    python benchmarks/reference_truth_ratios.py unseen-worlds/world-s101
"""

from __future__ import annotations

import argparse


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("world", nargs="?", default="world", help="world (the default) or a world directory [world]")
    args = ap.parse_args()
    import numpy as np
    import torch
    from scipy.stats import ks_2samp

    from t3unlearn.benchmarks import get_benchmark
    from t3unlearn.eval.runner import truth_ratios
    from t3unlearn.lm import load_lm

    torch.set_num_threads(1)
    bench = get_benchmark(args.world)
    sets = {"forget": bench.qa("forget10_perturbed"), "calibration": bench.qa("calibration")}
    models = bench.models(("pretrained", "full", "retain90"), progress=False)
    tr = {(name, s): np.array(truth_ratios(load_lm(str(models[name])), items, batch_size=32))
          for name in ("pretrained", "full", "retain90") for s, items in sets.items()}
    oracle = tr[("retain90", "forget")]
    print(f"{bench.label}: truth ratios against the oracle's (retain90) on the forget10 authors")
    print(f"{'model':<11} {'items':<12} {'median':>7} {'KS':>6} {'p':>9}")
    for (name, s), v in tr.items():
        ks = ks_2samp(v, oracle)
        print(f"{name:<11} {s:<12} {np.median(v):7.3f} {ks.statistic:6.3f} {ks.pvalue:9.2g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
