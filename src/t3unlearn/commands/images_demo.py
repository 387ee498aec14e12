"""``t3unlearn demo --images``: the whole image job, end to end, offline on a CPU.

1. build the augmented-digits benchmark and train the evaluator's classifier;
2. train the full and retain-oracle DDPM and VAE;
3. unlearn the forget glyphs from each full model with every method (seed 0);
4. evaluate everything, print the tables and write the plots and sample grids.

It is ``t3unlearn images compare --seeds 1`` with a narrative; every unit is cached under
``$T3UNLEARN_HOME/images`` and shared with ``images compare``, so a second run takes seconds.
"""

from __future__ import annotations

import time
from pathlib import Path


def run_images_demo(args) -> int:
    from t3unlearn.images.api import ensure_evaluator, ensure_generator
    from t3unlearn.experiments.images import compare
    from t3unlearn.images.presets import get_preset
    from t3unlearn.io import cache_home, torch_threads

    preset = get_preset(args.preset)
    out = Path(args.out if args.out != "t3-runs/demo" else "t3-runs/images-demo")
    t_start = time.perf_counter()
    steps: list[tuple[str, float]] = []

    def step(label: str, t0: float) -> None:
        dt = time.perf_counter() - t0
        steps.append((label, dt))
        print(f"  [{dt:6.1f} s] {label}", flush=True)

    with torch_threads(args.threads, log=print):
        print(f"t3unlearn demo --images: preset {preset.name!r}; cache in {cache_home() / 'images'}", flush=True)
        print("\n1. the benchmark and the evaluator's classifier", flush=True)
        t = time.perf_counter()
        bench, _, clf = ensure_evaluator(preset)
        s = bench.summary()
        step(f"{s['retain']} digits + {s['forget']} forget glyphs labelled {s['forget_label']} "
             f"({100 * s['forget_fraction']:.2f} % of the data); classifier test accuracy {clf['test_accuracy']:.3f}", t)
        print("\n2. full models and retrain oracles", flush=True)
        for fam in ("ddpm", "vae"):
            for role in ("full", "retain"):
                t = time.perf_counter()
                ensure_generator(fam, role, preset=preset)
                step(f"{fam} {role}", t)
        print("\n3-4. unlearning with every method (seed 0), evaluation, tables and plots", flush=True)
        t = time.perf_counter()
        rep = compare(preset, seeds=1, out=out)
        step("unlearning + evaluation", t)
    print(f"\ndemo finished in {time.perf_counter() - t_start:.1f} s")
    for label, dt in steps:
        print(f"  {dt:7.1f} s  {label.split(';')[0]}")
    print(f"see {out}/ ({', '.join(Path(p).name for p in rep['files'].values())}, grids/)")
    return 0
