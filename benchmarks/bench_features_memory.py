"""Peak memory of feature extraction as the retain set grows: streamed in shards vs held whole.

The world's retain90 set is repeated 1x, 4x and 16x and its T3 features are extracted by `t3unlearn features`
in a fresh process each time (so each peak is that run's own), once streamed in shards of --shard-mb MB and
once as a single shard (the whole set's features in memory before anything is written, as a non-streaming
extraction holds them). Printed: the peak resident set size of each process (``ru_maxrss``), the features'
size on disk and the wall time.

    python benchmarks/bench_features_memory.py                      # default world, 1x 4x 16x
    python benchmarks/bench_features_memory.py --world tiny --scales 1,4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import resource, sys
from t3unlearn.commands.main import main
rc = main(sys.argv[1:])
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
sys.exit(rc)
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default="default", help="world preset [default]")
    p.add_argument("--scales", default="1,4,16", help="how many times the retain set is repeated [1,4,16]")
    p.add_argument("--shard-mb", type=float, default=16.0, help="shard size of the streamed runs [16]")
    p.add_argument("--threads", default="1", help="torch threads in each run [1]")
    p.add_argument("--modes", default="streamed,one shard", help="which runs: streamed, one shard [both]")
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    from t3unlearn.benchmarks import get_benchmark

    bench = get_benchmark("world" if args.world == "default" else f"world-{args.world}")
    model = bench.model("full", progress=False)
    retain = bench.qa("retain90").to_list()
    scales = [int(x) for x in args.scales.split(",") if x.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    rows = []
    try:
        for scale in scales:
            data = tmp / f"retain-x{scale}.jsonl"
            with open(data, "w", encoding="utf-8") as fh:
                for _ in range(scale):
                    for r in retain:
                        fh.write(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n")
            for mode, mb in [x for x in (("streamed", args.shard_mb), ("one shard", 1e9)) if x[0] in modes]:
                cache = tmp / f"cache-{scale}-{mode.replace(' ', '')}"
                cmd = [sys.executable, "-c", CHILD, "features", "--model", str(model), "--data", str(data), "--cache-dir", str(cache),
                       "--shard-mb", str(mb), "--threads", args.threads, "--quiet"]
                t0 = time.perf_counter()
                r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "T3UNLEARN_PROGRESS": "off"})
                wall = time.perf_counter() - t0
                if r.returncode != 0:
                    print(r.stdout, r.stderr, file=sys.stderr)
                    return 1
                peak = int(next(x for x in r.stdout.splitlines() if x.startswith("PEAK_RSS_KB")).split()[1]) / 1024
                size = sum(f.stat().st_size for f in cache.rglob("*.safetensors")) / 2**20
                shards = len(list(cache.rglob("shard-*.safetensors")))
                rows.append((scale, len(retain) * scale, mode, shards, size, peak, wall))
                print(f"  {scale:>2}x ({len(retain) * scale} items), {mode}: {shards} shard(s), {size:.0f} MB of features, "
                      f"peak RSS {peak:.0f} MB, {wall:.1f}s", flush=True)
                shutil.rmtree(cache, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nfeature extraction of world-{args.world} retain90 repeated (model {model.name}; one process per run, ru_maxrss):\n")
    print("| retain set | items | features on disk (MB) | peak RSS, streamed in %g MB shards (MB) | peak RSS, one shard (MB) |" % args.shard_mb)
    print("|---|---:|---:|---:|---:|")
    for scale in scales:
        s = next((r for r in rows if r[0] == scale and r[2] == "streamed"), None)
        o = next((r for r in rows if r[0] == scale and r[2] == "one shard"), None)
        any_ = s or o
        print(f"| {scale}x | {any_[1]} | {any_[4]:.0f} | {s[5] if s else float('nan'):.0f} | {o[5] if o else float('nan'):.0f} |")
    streamed = [r for r in rows if r[2] == "streamed"]
    if not streamed:
        return 0
    first, last = streamed[0], streamed[-1]
    print(f"\nstreamed: peak RSS {first[5]:.0f} MB at {first[0]}x -> {last[5]:.0f} MB at {last[0]}x "
          f"({last[5] - first[5]:+.0f} MB for {last[4] - first[4]:.0f} MB more features)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
