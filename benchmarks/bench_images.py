"""How long does the image job take? Training and unlearning wall times (not a test).

Targets (issue 13), on 2 CPU cores: the full + retain-oracle models of a family train in
<= 10 minutes; each unlearning run takes <= 3 minutes.

    python benchmarks/bench_images.py                      # default preset, an empty cache: times everything
    python benchmarks/bench_images.py --families ddpm      # one family
    python benchmarks/bench_images.py --preset tiny        # a quick run
    python benchmarks/bench_images.py --home ~/.cache/t3unlearn   # reuse a cache (cached units print 'cached')

By default it points T3UNLEARN_HOME at a fresh temporary directory so nothing is reused, trains
each family's full and oracle models (seed 0), then runs every method once (seed 0) and prints
each time against its target. It uses one torch thread (--threads) and prints the machine's load
average before and after: on a shared machine the times grow with the load.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--families", default="ddpm,vae")
    ap.add_argument("--methods", default="naive,neggrad,neggrad_plus,siss,adaptive_siss,t3")
    ap.add_argument("--home", default=None, help="T3UNLEARN_HOME to use (default: a fresh temporary directory)")
    ap.add_argument("--threads", default="1", help="torch threads [1]")
    args = ap.parse_args(argv)

    tmp = None
    if args.home is None:
        tmp = tempfile.TemporaryDirectory(prefix="t3-bench-images-")
        os.environ["T3UNLEARN_HOME"] = tmp.name
    else:
        os.environ["T3UNLEARN_HOME"] = str(Path(args.home).expanduser())

    from t3unlearn.images.api import ensure_evaluator, ensure_generator, unlearn_cached
    from t3unlearn.images.models import ImageGenerator
    from t3unlearn.io import torch_threads

    load0 = os.getloadavg()
    print(f"bench_images: preset {args.preset}, T3UNLEARN_HOME={os.environ['T3UNLEARN_HOME']}, "
          f"load average {load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f} on {os.cpu_count()} cores", flush=True)
    fams = [f.strip() for f in args.families.split(",") if f.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    rows = []
    ok = True
    with torch_threads(args.threads, log=print):
        t = time.perf_counter()
        ensure_evaluator(args.preset, progress=False)
        rows.append(("benchmark + classifier", time.perf_counter() - t, None))
        for fam in fams:
            total = 0.0
            for role in ("full", "retain"):
                t = time.perf_counter()
                path = ensure_generator(fam, role, preset=args.preset, progress=False)
                wall = time.perf_counter() - t
                rec = ImageGenerator.load(path).meta["train"]
                took = rec["train_seconds"] if wall < 0.5 * rec["train_seconds"] else wall
                total += took
                rows.append((f"train {fam} {role} ({rec['config']['steps']} steps)" + (" [cached]" if took != wall else ""), took, None))
            rows.append((f"  {fam} full + oracle", total, 600.0))
            ok &= total <= 600
            for m in methods:
                _, rec = unlearn_cached(fam, m, preset=args.preset, seed=0, progress=False)
                rows.append((f"unlearn {fam} {m} ({rec['config']['steps']} steps)", rec["unlearn_seconds"], 180.0))
                ok &= rec["unlearn_seconds"] <= 180
                print(f"  ... {fam} {m}: {rec['unlearn_seconds']:.1f} s", flush=True)
    load1 = os.getloadavg()
    print()
    print(f"{'step':<48} {'wall time':>10}  target")
    for label, sec, target in rows:
        verdict = "" if target is None else (f"<= {target:.0f} s  " + ("ok" if sec <= target else "OVER"))
        print(f"{label:<48} {sec:9.1f} s  {verdict}")
    print(f"load average after: {load1[0]:.1f} / {load1[1]:.1f} / {load1[2]:.1f}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
