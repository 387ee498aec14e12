"""One table from several ``t3unlearn probe`` runs: each model's measures as mean ± sd over the runs that hold it.

    python benchmarks/probe_table.py t3-runs/probe-t3-s0 t3-runs/probe-t3-s1 t3-runs/probe-t3-s2 \
        t3-runs/probe-full --label 't3-s*=T3 (3 heads)'

Every run directory holds PROBES.json (``t3unlearn probe --out``); a model name may carry a seed (``t3-s0``):
``--label PATTERN=NAME`` pools the models whose name matches the glob PATTERN under NAME. The reference (the
oracle, ``retain90``) is read from the runs too; the last column of each pooled row is its mean difference to
the oracle's value and the largest difference over the runs.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
from pathlib import Path

import numpy as np

from t3unlearn.eval.probe import metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="directories with PROBES.json")
    p.add_argument("--label", action="append", default=[], help="PATTERN=NAME: pool models matching PATTERN as NAME")
    p.add_argument("--by-dir", action="store_true", help="name each probed model (not the oracle) by its run directory")
    args = p.parse_args()
    labels = [tuple(x.split("=", 1)) for x in args.label]
    pooled: dict[str, list[dict]] = {}
    diffs: dict[str, list[dict]] = {}
    for run in args.runs:
        data = json.loads((Path(run) / "PROBES.json").read_text())
        ref = data.get("reference")
        ref_flat = metrics(data["results"][ref]) if ref else None
        for name, res in data["results"].items():
            label = Path(run).name if args.by_dir and name != ref else name
            label = next((n for pat, n in labels if fnmatch.fnmatch(label, pat)), label)
            flat = metrics(res)
            if name == ref and any(flat == f for f in pooled.get(label, [])):
                continue  # the same (cached) oracle probed beside every run: count it once
            pooled.setdefault(label, []).append(flat)
            if ref_flat is not None and name != ref:
                diffs.setdefault(label, []).append({k: v - ref_flat[k] for k, v in flat.items() if k in ref_flat})
    names = list(pooled)
    rows = list(dict.fromkeys(k for runs in pooled.values() for f in runs for k in f))
    head = [f"{n} (n={len(pooled[n])})" for n in names]
    print("| measure | " + " | ".join(head) + " |")
    print("|---|" + "---:|" * len(names))
    for r in rows:
        cells = []
        for n in names:
            vals = [f[r] for f in pooled[n] if r in f]
            cell = f"{np.mean(vals):.3f}" + (f" ± {np.std(vals, ddof=1):.3f}" if len(vals) > 1 else "")
            d = [x[r] for x in diffs.get(n, []) if r in x]
            if d:
                worst = max(d) if r != "entity kept" else min(d)
                cell += f" ({np.mean(d):+.3f}; worst {worst:+.3f})" if len(d) > 1 else f" ({d[0]:+.3f})"
            cells.append(cell)
        print(f"| {r} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
