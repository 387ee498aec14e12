"""``t3unlearn demo``: the whole job on the embedded world, offline, on a CPU.

1. build the world (fictitious authors in TOFU's schema) and train its tiny models: a "full"
   model that memorised every author and a "retain" oracle that never saw the forget authors;
2. unlearn the forget authors from the full model with T3 (the weights stay frozen) and choose T and s
   with ``t3unlearn calibrate``'s oracle-free rule: the forget truth ratios must look like the full model's own
   on the world's never-seen calibration authors, and the forget answers as unfamiliar to a membership attack
   as theirs;
3. show some answers before and after;
4. evaluate full, retain, T3 and plain classifier guidance (the same head at T = 1, its s calibrated by the
   same rule) on every TOFU metric,
   and write the comparison table and the forget-quality vs utility plot.

Everything is cached under ``$T3UNLEARN_HOME`` (default ``~/.cache/t3unlearn``), so a second run
takes seconds. Each step prints its wall time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from t3unlearn.t3.config import Guidance
from t3unlearn.t3.options import add_guidance_options

_EPILOG = """\
examples:
  t3unlearn demo                          # default world, forget10; writes t3-runs/demo/
  t3unlearn demo --preset tiny            # the test-sized world: about a minute cold
  t3unlearn demo --split forget05 --out runs/demo05
  t3unlearn demo --images                 # the image job: DDPM + VAE unlearning (docs/images.md)

what it writes to --out:
  t3-head/                  the T3 head (head.safetensors + t3_config.json, with the calibration), loadable with
                            T3ForCausalLM.from_pretrained or 't3unlearn generate --model t3-head'
  full/ retain90/ t3/ cg/   each model's TOFU_EVAL.json, TOFU_SUMMARY.json, run_info.json
  report.md, fq_vs_mu.png   the comparison table and the forget quality vs model utility plot
"""


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="build the offline world, unlearn with T3, evaluate and report (the whole job)",
        description="Run the whole t3unlearn job on the embedded offline world: build it and its tiny "
        "models, unlearn the forget authors with T3, show answers before and after, evaluate every model "
        "on the TOFU metrics and write the comparison.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default="default", help="world preset: default or tiny [default]")
    p.add_argument("--split", default="forget10", choices=("forget01", "forget05", "forget10"), help="[forget10]")
    p.add_argument("--out", default="t3-runs/demo", help="output directory [t3-runs/demo]")
    add_guidance_options(p.add_argument_group("T3's guidance"), knobs=("temperature", "scale", "tempering"))
    p.add_argument("--no-calibrate", action="store_true",
                   help="keep --temperature, --scale and --tempering instead of choosing T and s with the oracle-free "
                        "rule of 't3unlearn calibrate' (forget truth ratios like the full model's on never-seen calibration "
                        "authors, forget answers as unfamiliar to a membership attack as theirs; see docs/t3.md)")
    p.add_argument("--seed", type=int, default=0, help="head training seed [0]")
    p.add_argument("--threads", default="auto", help="torch CPU threads: a number, 0 (torch's default) or auto: the cores not busy [auto]")
    p.add_argument("--no-eval", action="store_true", help="stop after showing answers (skip the TOFU evaluation)")
    p.add_argument("--images", action="store_true", help="instead: the image job (DDPM + VAE, SISS, Adaptive-λ SISS, "
                   "baselines) on the augmented-digits benchmark; writes t3-runs/images-demo (see docs/images.md)")
    p.set_defaults(func=run_demo)


class _Clock:
    def __init__(self):
        self.start = time.perf_counter()
        self.steps: list[tuple[str, float]] = []

    def step(self, label: str, t0: float) -> None:
        dt = time.perf_counter() - t0
        self.steps.append((label, dt))
        print(f"  [{dt:6.1f} s] {label}", flush=True)

    def total(self) -> float:
        return time.perf_counter() - self.start


def _calibrate(t3, tokenizer, forget, retain, bench, split: str, clock: _Clock) -> tuple[dict, dict]:
    """T3's guidance and plain guidance's (the same head at T = 1), each chosen by calibrate's oracle-free rule on
    the benchmark's never-seen calibration authors; T3's is set on ``t3`` and recorded in its config."""
    from dataclasses import asdict

    from t3unlearn.errors import T3Error
    from t3unlearn.lm import load_model
    from t3unlearn.t3.calibrate import calibrate

    found = bench.calibration(split)
    if found is None:
        raise T3Error(f"the {bench.label} benchmark has no calibration set for {split}; run the demo with --no-calibrate.")
    holdout, name = found
    t = time.perf_counter()
    from t3unlearn.t3.calibrate import has_perturbed

    # the reference truth ratios: the full model's own on the never-seen calibration authors (the world's calibration
    # set carries perturbed answers); without them, the checkpoint the full model was fine-tuned from on the forget set
    never_seen = has_perturbed(holdout)
    reference = None if never_seen else load_model(str(bench.models(("pretrained",), log=print)["pretrained"]))
    against = f"the full model's truth ratios on {name}" if never_seen else f"{bench.label}:pretrained's forget truth ratios"
    perturbed = bench.qa(f"{split}_perturbed", what="perturbed forget set")
    cal = calibrate(t3, tokenizer, forget, holdout, retain, reference=reference, perturbed=perturbed, progress=True)
    t3.config.calibration.update(holdout=name, perturbed=f"{bench.label}:{split}_perturbed")
    if not never_seen:
        t3.config.calibration["reference_model"] = f"{bench.label}:pretrained"
    plain = cal.restricted(lambda s: s.temperature == 1.0)  # the same grid's T = 1 rows, the same rule
    c, p = cal.chosen, plain.chosen
    clock.step(f"calibrated: {len(cal.rows)} settings ({len(plain.rows)} at T = 1) against {against}, {name} as "
               f"never-seen items; T3 {c.setting.label()} (truth-ratio KS {c.tr_ks:.3f}, "
               f"membership AUC {c.mia_auc:.3f}); T = 1: {p.setting.label()}", t)
    return asdict(c.setting), asdict(p.setting)


def _show_answers(lms: dict, questions: list[tuple[str, str, str]]) -> None:
    """Print each question with the reference and every model's greedy answer."""
    answers = {name: lm.generate([q for _, q, _ in questions], max_new_tokens=60) for name, lm in lms.items()}
    width = max(len(n) for n in lms)
    for i, (kind, q, ref) in enumerate(questions):
        print(f"\n  [{kind}] {q}\n    {'truth'.ljust(width)} : {ref}")
        for name in lms:
            print(f"    {name.ljust(width)} : {answers[name][i]}")


def run_demo(args) -> int:
    from t3unlearn.io import torch_threads

    if getattr(args, "images", False):
        from t3unlearn.commands.images_demo import run_images_demo

        return run_images_demo(args)
    with torch_threads(args.threads, log=print):
        return _demo(args)


def _demo(args) -> int:
    import torch

    from t3unlearn.benchmarks import cached_evaluation, get_benchmark
    from t3unlearn.eval import apply_reference, write_report
    from t3unlearn.eval.runner import retain_split
    from t3unlearn.io import cache_home
    from t3unlearn.lm import CausalLM, load_model, load_tokenizer
    from t3unlearn.t3 import T3ForCausalLM, unlearn
    from t3unlearn.t3.train import format_report

    torch.manual_seed(args.seed)
    out = Path(args.out)
    clock = _Clock()
    retain_name = retain_split(args.split)
    bench = get_benchmark(args.preset)
    print(f"t3unlearn demo: world preset {args.preset!r}, {args.split}; cache in {cache_home()}", flush=True)

    print("\n1. the world and its models", flush=True)
    t = time.perf_counter()
    world = bench.world_dir()
    clock.step(f"world ready: {world}", t)
    t = time.perf_counter()
    models = bench.models(("full", retain_name), log=print)
    clock.step(f"models ready: full, {retain_name} ({models['full'].parent})", t)

    g = Guidance().replace(**Guidance.changes_from(args))
    guidance = {"temperature": g.temperature, "scale": g.scale, "tempering": g.tempering}
    cg_guidance = {"temperature": 1.0, "scale": g.scale}
    print(f"\n2. unlearn {args.split} from the full model with T3 "
          + ("(then T and s calibrated without the oracle)" if not args.no_calibrate else
             f"(T = {g.temperature:g}, s = {g.scale:g}, {g.tempering} tempering)"), flush=True)
    t = time.perf_counter()
    tokenizer = load_tokenizer(str(models["full"]))
    base = load_model(str(models["full"]))
    forget = bench.qa(args.split, what="forget set")
    retain = bench.qa(retain_name, what="retain set")
    result = unlearn(base, tokenizer, forget, retain, **guidance, seed=args.seed, progress=True)
    rep = result.report
    clock.step(f"head trained (features {rep['features_s']:.1f} s{', cached' if rep['features_cached'] else ''}; "
               f"training {rep['train_s']:.1f} s)", t)
    print("  " + format_report(rep).replace("\n", "\n  "))
    if not args.no_calibrate:
        guidance, cg_guidance = _calibrate(result.model, tokenizer, forget, retain, bench, args.split, clock)
    head_dir = out / "t3-head"
    result.model.save_pretrained(head_dir)
    print(f"  saved to {head_dir}", flush=True)

    t3 = result.model.eval()
    cg = T3ForCausalLM.from_base(base, head_dir, **cg_guidance).eval()
    retain_model = load_model(str(models[retain_name]))
    lms = {
        "full": CausalLM(base, tokenizer, name="full"),
        retain_name: CausalLM(retain_model, tokenizer, name=retain_name),
        "t3": CausalLM(t3, tokenizer, name="t3"),
        "cg (T=1)": CausalLM(cg, tokenizer, name="cg"),
    }

    print("\n3. answers before and after (greedy)", flush=True)
    t = time.perf_counter()
    pick = [("forget", forget[i]) for i in (0, len(forget) // 2 + 3)] + [("retain", retain[i]) for i in (1, len(retain) // 2 + 5)]
    _show_answers(lms, [(kind, row["question"], row["answer"]) for kind, row in pick])
    clock.step("answers", t)

    if not args.no_eval:
        print(f"\n4. TOFU evaluation on {args.split} (every metric; cached per model and settings)", flush=True)
        t = time.perf_counter()
        data = bench.data(args.split)
        reference = bench.retain_reference(args.split, data=data, log=print)
        reference.info["name"] = retain_name
        reference.save(out / retain_name)
        clock.step(f"{retain_name} (the oracle: forget quality reference)", t)
        for name, head, settings in (
            ("full", None, None),
            ("t3", head_dir, guidance),
            ("cg", head_dir, cg_guidance),
        ):
            t = time.perf_counter()
            res = cached_evaluation(models["full"], name=name, split=args.split, data=data, benchmark=bench.label,
                                    head=head, head_settings=settings, log=print)
            apply_reference(res, reference)
            res.info["name"] = name
            res.save(out / name)
            clock.step(f"evaluated {name}", t)
        table, files = write_report([out / retain_name, out / "full", out / "t3", out / "cg"], out, retain=retain_name)
        print("\n" + table)
        print(f"wrote {files.get('report', out / 'report.md')} and {files.get('plot', out / 'fq_vs_mu.png')}")

    print(f"\ndemo finished in {clock.total():.1f} s")
    for label, dt in clock.steps:
        print(f"  {dt:7.1f} s  {label.split(':')[0]}")
    return 0
