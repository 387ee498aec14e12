"""``t3unlearn images build | train | unlearn | eval | compare | exactness``: unlearning for image generators."""

from __future__ import annotations

import argparse

from t3unlearn.images.guidance import guidance_defaults

_DESCRIPTION = """\
Unlearning for image generative models (DDPMs and VAEs) on an offline augmented-digits benchmark:
MNIST digits plus a generated trousers-like glyph family labelled "1" (about 1 % of the data, the
forget set). Methods: naive deletion, NegGrad, NegGrad+, SISS (static λ), Adaptive-λ SISS, EraseDiff,
the hybrid SFD + SISS and an RL-chosen λ, which fine-tune the generator; SFD, which distils a one-step
generator from it; and T3 (temper, then tilt) and classifier guidance, which keep it frozen and guide
its sampler with a small retain-vs-forget classifier ('images unlearn --help' lists them all); for a
class-conditional diffusers DDPM and a conditional VAE (EraseDiff, SFD and the hybrid: the DDPM only).
An evaluator classifier measures how often the forget glyphs come back and how good the digits stay.
"""

_EPILOG = """\
examples:
  t3unlearn images build --out bench                       the benchmark (cached), also written to bench/ with a picture
  t3unlearn images train --family ddpm --role full,retain  the full model and the retrain oracle
  t3unlearn images unlearn --model ddpm:full --method siss --out siss-ddpm
  t3unlearn images unlearn --model vae:full --method adaptive_siss --set kl_weight=0.01 --out ad-vae
  t3unlearn images unlearn --model ddpm:full --method t3 --set temperature=1.5 --out t3-ddpm
  t3unlearn images exactness --out exact          T3's samplers on 2-D mixtures with a known target
  t3unlearn images eval --model siss-ddpm --out runs/siss-ddpm        metrics + sample grid
  t3unlearn images eval --model ddpm:retain
  t3unlearn images compare --seeds 3 --out t3-runs/images               every method, table + plots
  t3unlearn images compare --preset tiny --seeds 1 --out /tmp/ti       test-sized, about a minute

models: a directory written by 'images train --out' / 'images unlearn --out', or FAMILY:ROLE
(ddpm:full, ddpm:retain, vae:full, vae:retain) for the preset's cached models (trained on first use).
Everything is cached under $T3UNLEARN_HOME/images (default ~/.cache/t3unlearn/images).
"""

# images compare's default methods (t3unlearn.images.methods.DEFAULT_METHODS; not imported here, so that
# --help does not load torch; a test keeps the two equal)
_DEFAULT_METHODS = ("naive", "neggrad", "neggrad_plus", "siss", "adaptive_siss", "cg", "t3")

_METHODS_HELP = """\
methods (--method; settings with --set KEY=VALUE):
  naive          naive deletion: fine-tune on the retain data only
  neggrad        gradient ascent on the forget data
  neggrad_plus   descent on retain + alpha x ascent on forget               [alpha]
  siss           SISS: importance-sampled naive deletion minus c x the forget term, one noisy
                 sample from the λ-mixture of a data image and a forget image
                 [lambda=0.5, lambda_end (a geometric schedule), superfactor, forget_norm,
                 forget_norm_ratio=0.1, forget_norm_mode=rescale (every step, as the reference) or clip]
  siss_no_is     SISS's objective without importance sampling (each image noised on its own)
  adaptive_siss  Adaptive-λ SISS: λ ~ q(λ | losses and gradient norms on the retain and forget
                 batches, now) from an inference network trained to minimise the SISS estimator's
                 variance (+ kl_weight x KL(q || prior)); the model's step is SISS's at that λ
                 [prior_lambda, prior_sigma, kl_weight, hidden, infer_lr=0.01, feature_grads, superfactor, forget_norm*]
  erasediff      EraseDiff (DDPM only): retain denoising + the forget images' denoising pushed to
                 uniform-noise targets, weighted by EraseDiff's first-order bi-level rule   [eta=0.001]
  t3             T3: the generator stays frozen; a classifier f(retain | x_t, t, y) (DDPM; on decoded
                 samples for the VAE) trains (--steps, --lr, --batch-size are its), and sampling
                 draws from p^(1/T) f^s   [DDPM: temperature={ddpm[temperature]:g}, scale={ddpm[scale]:g}, scheme={ddpm[scheme]}
                 (or score, langevin: how p^(1/T) is sampled), langevin_steps={ddpm[langevin_steps]},
                 final_langevin_steps={ddpm[final_langevin_steps]}, snr={ddpm[snr]:g}, langevin_min_sigma={ddpm[langevin_min_sigma]:g};
                 VAE: temperature={vae[temperature]:g}, scale={vae[scale]:g}]
  cg             the same with temperature=1: plain classifier guidance [DDPM scale={cg_ddpm[scale]:g}, VAE scale={cg_vae[scale]:g}]
  sfd            Score Forgetting Distillation (DDPM only, data-free): a one-step generator distilled
                 from the frozen DDPM, the forget label given the safe label's score
                 [forget_labels=[1], safe_label=10 (unconditional), t_star=0.9, t_min, t_max,
                 gradient=sid (SiD's full gradient, alpha=1.2) or dmd (the earlier form)]
  sfd_multi      the same forgetting labels 1 and 7 at once
  sfd_multi_adaptive  the same, each forget label weighted by how far it still is from its target
                 [adaptive_weights=true, weight_ema=0.9]
  sfd_siss       hybrid (DDPM only): SISS plus SFD's data-free score-forgetting term (the forget labels'
                 score pulled to the frozen DDPM's safe-label score at its own samples), its weight
                 fading as the forget loss rises   [sfd_weight=0.1, adaptive=true, safe_label=10,
                 pool_size=256, pool_steps=20, and SISS's]
  rl_siss        experimental: SISS with λ picked every `interval` steps by a REINFORCE policy
                 rewarded for forget-loss growth minus beta x retain-loss growth
                 [interval=10, beta=1, policy_lr (DDPM 1e-2, VAE 1e-3), prior_lambda, prior_sigma]
""".format(ddpm=guidance_defaults("t3", "ddpm"), vae=guidance_defaults("t3", "vae"),
                   cg_ddpm=guidance_defaults("cg", "ddpm"), cg_vae=guidance_defaults("cg", "vae"))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="default", help="default (minutes on a CPU) or tiny (seconds; tests) [default]")
    p.add_argument("--threads", default="auto", help="torch CPU threads: a number, 0 (torch's default) or auto: the cores not "
                   "busy [auto]")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register(sub) -> None:
    p = sub.add_parser("images", help="unlearning for image generators (DDPM, VAE): SISS, Adaptive-λ SISS, T3, SFD, baselines",
                       description=_DESCRIPTION, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    isub = p.add_subparsers(dest="images_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda a: p.print_help() or 2)
    fmt = argparse.RawDescriptionHelpFormatter

    b = isub.add_parser("build", help="build the augmented-digits benchmark (cached) and draw it", epilog=_EPILOG, formatter_class=fmt)
    _common(b)
    b.add_argument("--out", default=None, metavar="DIR", help="also write it to DIR (data.safetensors, bench.json, samples.png): a new or "
                   "empty directory, or one written here before (replaced whole)")
    b.set_defaults(func=_build)

    t = isub.add_parser("train", help="train the full model and/or the retrain oracle", epilog=_EPILOG, formatter_class=fmt)
    _common(t)
    t.add_argument("--family", default="ddpm,vae", help="ddpm, vae or both, comma-separated [ddpm,vae]")
    t.add_argument("--role", default="full,retain", help="full (all data), retain (the oracle: without the forget set) [full,retain]")
    t.add_argument("--seed", type=int, default=0, help="training seed [0]")
    t.add_argument("--out", default=None, metavar="DIR", help="also copy each model to DIR/FAMILY-ROLE (replaced whole if it holds an image "
                   "model; any other non-empty directory is refused)")
    t.set_defaults(func=_train)

    u = isub.add_parser("unlearn", help="unlearn the forget glyphs from a model with one method",
                        epilog=_METHODS_HELP + "\n" + _EPILOG, formatter_class=fmt)
    _common(u)
    u.add_argument("--model", default="ddpm:full", help="the model to unlearn from: a directory or FAMILY:full [ddpm:full]")
    u.add_argument("--method", default="siss", help="naive, neggrad, neggrad_plus, siss, siss_no_is, adaptive_siss, erasediff, sfd_siss, rl_siss, t3, cg, sfd, "
                                                         "sfd_multi, sfd_multi_adaptive [siss]")
    u.add_argument("--out", required=True, metavar="DIR", help="output directory: the unlearned model + run.json; a new or empty directory, or "
                   "an image model written before (replaced whole)")
    u.add_argument("--steps", type=int, default=None, help="unlearning steps [the preset's]")
    u.add_argument("--lr", type=float, default=None, help="learning rate [the preset's]")
    u.add_argument("--batch-size", type=int, default=None, help="pairs per step [the preset's]")
    u.add_argument("--seed", type=int, default=0, help="seed of every random draw [0]")
    u.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a method setting, e.g. superfactor=50 (repeatable)")
    u.set_defaults(func=_unlearn)

    e = isub.add_parser("eval", help="forget rates, class accuracy, Fréchet distance (and ELBOs) of a model + sample grid",
                        epilog=_EPILOG, formatter_class=fmt)
    _common(e)
    e.add_argument("--model", required=True, help="a directory or FAMILY:ROLE (ddpm:full, vae:retain, ...)")
    e.add_argument("--out", default=None, metavar="DIR", help="write eval.json and samples.png there")
    e.add_argument("--sampler", default=None, choices=("ddpm", "ddim"), help="DDPM sampler [ddpm]")
    e.add_argument("--steps", type=int, default=None, help="DDPM sampling steps [30]")
    e.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance (1 = off) [1]")
    e.add_argument("--seed", type=int, default=None, help="sampling seed [1234]")
    e.set_defaults(func=_eval)

    c = isub.add_parser("compare", help="every method and the oracle on both families, several seeds: table + plots",
                        epilog=_EPILOG, formatter_class=fmt)
    _common(c)
    c.add_argument("--families", default="ddpm,vae", help="comma-separated [ddpm,vae]")
    c.add_argument("--methods", default=",".join(_DEFAULT_METHODS),
                   help="comma-separated, from every method of 'images unlearn --help' "
                        "[naive,neggrad,neggrad_plus,siss,adaptive_siss,cg,t3]")
    c.add_argument("--seeds", type=int, default=3, help="unlearning (and oracle training) seeds [3]")
    c.add_argument("--out", default="t3-runs/images", metavar="DIR", help="output directory [t3-runs/images]")
    c.add_argument("--no-grids", action="store_true", help="skip the sample grids")
    c.set_defaults(func=_compare)

    x = isub.add_parser("exactness", help="T3's diffusion samplers against a known target (2-D Gaussian mixtures)",
                        description="The exactness check of T3 for diffusion models: on a 2-D mixture with a concentrated "
                        "forget component, where p^(1/T) f^s is known, sample with the exact (analytic) scores and with a "
                        "tiny trained diffusion model + noise-conditional classifier, for each tempering scheme, and measure "
                        "the distance to the target (histogram TV, with the floor two exact samples give).",
                        formatter_class=fmt)
    x.add_argument("--out", default=None, metavar="DIR", help="write exactness.md, exactness.json and exactness.png there")
    x.add_argument("--n", type=int, default=4000, help="samples per run [4000]")
    x.add_argument("--steps", type=int, default=100, help="sampling steps [100]")
    x.add_argument("--seed", type=int, default=0, help="seed of the data, the models and the samplers [0]")
    x.add_argument("--models", default="analytic,trained", help="analytic (exact scores), trained (tiny models) [both]")
    x.add_argument("--threads", default="auto",
                   help="torch CPU threads: a number, 0 (torch's default) or auto: the cores not busy [auto]")
    x.add_argument("--quiet", action="store_true", help="no progress bars")
    x.set_defaults(func=_exactness)


def _families(text: str, option: str = "family") -> list[str]:
    from t3unlearn.errors import T3Error

    fams = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in fams if f not in ("ddpm", "vae")]
    if not fams or bad:
        raise T3Error(f"takes ddpm, vae or both (comma-separated), not {text!r}.", option=option)
    return fams


def _check_out(path, *, replaced_by: str | None = None, marker: str | None = None) -> None:
    """``--out`` checked before any work: not a file, writable, and, where the command replaces the directory
    whole (``replaced_by``: what it writes there), new, empty or that command's earlier output (``marker`` in it)."""
    from pathlib import Path

    from t3unlearn.io import check_replaceable
    from t3unlearn.t3.options import check_writable

    out = Path(path)
    if replaced_by:
        check_replaceable(out, marker, replaced_by, option="out")
    check_writable(out)  # a file there is refused too


def _build(args) -> int:
    import shutil
    import time
    from pathlib import Path

    from t3unlearn.images.data import ensure_benchmark, write_benchmark
    from t3unlearn.images.evaluator import save_grid
    from t3unlearn.images.presets import get_preset

    t0 = time.perf_counter()
    P = get_preset(args.preset)
    if args.out:
        _check_out(args.out, replaced_by="an image benchmark", marker="bench.json")
    bench = ensure_benchmark(P.bench)
    if args.out:
        out = write_benchmark(bench.settings, args.out, preset=P.bench)
        import torch

        per = 12
        rows = [bench.retain[bench.retain_labels == c][:per] for c in range(10)] + [bench.forget[:per]]
        save_grid(torch.cat(rows), Path(out) / "samples.png", nrow=per,
                  row_labels=[str(c) for c in range(10)] + [f"forget ({bench.forget_label})"], title="training images")
    s = bench.summary()
    print(f"image benchmark ({P.bench}): {s['train']} training images = {s['retain']} digits + {s['forget']} forget glyphs "
          f"labelled {s['forget_label']} ({100 * s['forget_fraction']:.2f} % of the data, {100 * s['forget_share_of_label']:.1f} % "
          f"of label {s['forget_label']}); {s['test']} held-out digits; {s['image_size']}x{s['image_size']} pixels")
    print(f"cached at {bench.path}" + (f"; written to {args.out} (with samples.png)" if args.out else ""))
    print(f"wall time: {time.perf_counter() - t0:.1f} s")
    del shutil
    return 0


def _train(args) -> int:
    import shutil
    import time
    from pathlib import Path

    from t3unlearn.errors import T3Error
    from t3unlearn.images.api import ROLES, ensure_generator
    from t3unlearn.images.models import META_FILE, ImageGenerator
    from t3unlearn.io import atomic_dir, torch_threads

    roles = [r.strip() for r in args.role.split(",") if r.strip()]
    if not roles or any(r not in ROLES for r in roles):
        raise T3Error(f"--role takes full, retain or both, not {args.role!r}.")
    families = _families(args.family)
    if args.out:
        _check_out(args.out)
        for fam in families:
            for role in roles:
                _check_out(Path(args.out) / f"{fam}-{role}", replaced_by="an image generator", marker=META_FILE)
    with torch_threads(args.threads, log=print):
        for fam in families:
            for role in roles:
                t0 = time.perf_counter()
                path = ensure_generator(fam, role, preset=args.preset, seed=args.seed, progress=not args.quiet)
                meta = ImageGenerator.load(path).meta["train"]
                took = time.perf_counter() - t0
                print(f"{fam} {role}: {meta['parameters']:,} parameters, {meta['config']['steps']} steps, trained in "
                      f"{meta['train_seconds']:.1f} s{' (cached)' if took < meta['train_seconds'] / 2 else ''}; {path}")
                if args.out:
                    with atomic_dir(Path(args.out) / f"{fam}-{role}", marker=META_FILE, what="an image generator") as tmp:
                        shutil.copytree(path, tmp, dirs_exist_ok=True)
    return 0


def _parse_sets(items) -> dict:
    import json

    from t3unlearn.errors import T3Error

    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise T3Error(f"--set takes KEY=VALUE, not {item!r}.")
        try:
            params[key.strip()] = json.loads(value.strip())
        except ValueError:
            params[key.strip()] = value.strip()
    return params


def _unlearn_inputs(args, method):
    """``(source directory, generator, training settings, method settings)`` of ``images unlearn``: the
    preset's settings for the family and method, then --steps/--lr/--batch-size/--seed and --set."""
    from t3unlearn.images.api import resolve_generator
    from t3unlearn.images.methods import resolve_params
    from t3unlearn.images.models import ImageGenerator
    from t3unlearn.images.presets import get_preset

    src = resolve_generator(args.model, preset=args.preset, progress=not args.quiet, log=print)
    gen = ImageGenerator.load(src)
    cfg, prm = get_preset(args.preset).unlearn_settings(gen.family, method.name)
    for key in ("steps", "lr", "batch_size"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    cfg["seed"] = args.seed
    return src, gen, cfg, resolve_params(method, {**prm, **_parse_sets(args.set)})


def _unlearn(args) -> int:
    from t3unlearn.images.api import load_bench, save_unlearned
    from t3unlearn.images.methods import get_method
    from t3unlearn.images.trainer import UnlearnConfig, unlearn
    from t3unlearn.io import torch_threads

    method = get_method(args.method)
    _check_out(args.out, replaced_by="an image generator or T3 head", marker="t3_images.json")
    from pathlib import Path

    from t3unlearn.errors import T3Error

    if Path(args.out).resolve() == Path(args.model).resolve():  # a T3 head over it would replace its own base
        raise T3Error(f"{args.out} is the model being unlearned (--model); write the result to another directory.",
                      option="out")
    if method.style == "guidance":
        return _unlearn_t3(args, method)
    if method.style == "distill":
        return _unlearn_sfd(args, method)
    with torch_threads(args.threads, log=print):
        src, gen, cfg, prm = _unlearn_inputs(args, method)
        bench = load_bench(args.preset)
        new, record = unlearn(gen, bench, method, params=prm, config=UnlearnConfig.from_dict(cfg), progress=not args.quiet)
        record["source"] = str(src)
        save_unlearned(new, record, args.out)
    last = record["history"][-1]
    logs = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if isinstance(v, float))
    print(f"{method.title} on the {gen.family}: {record['config']['steps']} steps in {record['unlearn_seconds']:.1f} s; last step: {logs}")
    if "lambda" in last and method.name == "adaptive_siss":
        lam = [h["lambda_median"] for h in record["history"]]
        print(f"λ (posterior median): {lam[0]:.3f} at the start, {lam[len(lam) // 2]:.3f} halfway, {lam[-1]:.3f} at the end")
    print(f"saved {args.out} (evaluate it: t3unlearn images eval --model {args.out})")
    return 0


def _unlearn_sfd(args, method) -> int:
    from t3unlearn.errors import T3Error
    from t3unlearn.images.api import save_unlearned
    from t3unlearn.images.sfd import SFDConfig, distill
    from t3unlearn.io import torch_threads

    with torch_threads(args.threads, log=print):
        src, gen, cfg, prm = _unlearn_inputs(args, method)
        if gen.family not in method.families:
            raise T3Error(f"{method.title} distils a DDPM; {args.model} is a {gen.family} model.")
        new, record = distill(gen, SFDConfig.from_dict({**prm, **cfg}), progress=not args.quiet)
        record["source"] = str(src)
        save_unlearned(new, record, args.out)
    print(f"{method.title}: a one-step generator distilled from {src} in {record['unlearn_seconds']:.1f} s "
          f"({record['config']['steps']} steps; labels {record['params']['forget_labels']} now get label "
          f"{record['params']['safe_label']}'s score); saved {args.out} (evaluate it: t3unlearn images eval --model {args.out})")
    return 0


def _unlearn_t3(args, method) -> int:
    from t3unlearn.images.api import load_bench
    from t3unlearn.images.t3 import ClassifierTrainConfig, ImageGuidance, make_t3, save_guided
    from t3unlearn.io import torch_threads

    with torch_threads(args.threads, log=print):
        src, gen, cfg, prm = _unlearn_inputs(args, method)
        guidance = ImageGuidance.from_dict(prm)
        head, record = make_t3(gen, load_bench(args.preset), guidance=guidance, config=ClassifierTrainConfig.from_dict(cfg),
                               progress=not args.quiet)
        record["source"] = str(src)
        save_guided(head, src, args.out, record=record)
    c = record["classifier"]
    print(f"{method.title} on the {gen.family} (frozen): classifier of {record['trainable_params']:,} parameters, "
          f"{c['steps']} steps in {record['unlearn_seconds']:.1f} s, balanced accuracy {c['balanced_accuracy']:.3f} "
          f"(last batches); sampling: T = {guidance.temperature:g}, s = {guidance.scale:g}"
          + (f", the {guidance.scheme} tempering scheme" if gen.family == "ddpm" and guidance.temperature != 1 else ""))
    print(f"saved {args.out} (a head over {src}; evaluate it: t3unlearn images eval --model {args.out})")
    return 0


def _eval(args) -> int:
    import time
    from pathlib import Path

    from t3unlearn.images.api import eval_config, evaluate_cached, load_bench, resolve_generator
    from t3unlearn.images.evaluator import grid_samples, save_grid
    from t3unlearn.images.models import ImageGenerator
    from t3unlearn.io import save_json, torch_threads

    from t3unlearn.errors import T3Error

    t0 = time.perf_counter()
    if args.guidance_scale is not None and not args.guidance_scale >= 0:
        raise T3Error(f"must be >= 0 (1 = off, 0 = unconditional samples), not {args.guidance_scale:g}.",
                      option="guidance_scale")
    if args.out:
        _check_out(args.out)
    with torch_threads(args.threads, log=print):
        path = resolve_generator(args.model, preset=args.preset, progress=not args.quiet, log=print)
        if args.guidance_scale not in (None, 1.0) and ImageGenerator.load(path).family != "ddpm":
            raise T3Error("is the DDPM's classifier-free guidance; a VAE samples without it: leave it out.",
                          option="guidance_scale")
        cfg = eval_config(args.preset, sampler=args.sampler, steps=args.steps, guidance_scale=args.guidance_scale, seed=args.seed)
        res = evaluate_cached(path, preset=args.preset, config=cfg, progress=not args.quiet)
        if args.out:
            out = Path(args.out)
            gen = ImageGenerator.load(path)  # the grid is sampled before either file is written: both or neither
            imgs, names = grid_samples(gen, load_bench(args.preset), steps=cfg.steps, sampler=cfg.sampler, guidance_scale=cfg.guidance_scale)
            save_grid(imgs, out / "samples.png", nrow=12, row_labels=names, title=str(args.model))
            save_json(out / "eval.json", res)
    fl = res["forget_label"]
    print(f"{args.model} ({res['family']}):")
    print(f"  forget-glyph rate, label {fl}: {100 * res['forget_rate_label']:.1f} % of {res['n_forget_label']} samples "
          f"(the glyphs are {100 * res['forget_share_of_label']:.1f} % of label {fl}'s training images)")
    print(f"  forget-glyph rate, unconditional: {100 * res['forget_rate_uncond']:.1f} % of {res['n_uncond']} samples")
    print(f"  class-conditional accuracy: {res['class_acc']:.3f} (per digit: {' '.join(f'{v:.2f}' for v in res['per_class_acc'])})")
    print(f"  Fréchet distance on classifier features (not Inception FID): {res['frechet']:.2f} "
          f"(real vs real digits: {res['frechet_real']:.2f})")
    if "elbo_retain" in res:
        print(f"  ELBO (nats/image): retain {res['elbo_retain']:.1f}, forget {res['elbo_forget']:.1f}, held-out {res['elbo_test']:.1f}")
    if args.out:
        print(f"wrote {Path(args.out) / 'eval.json'} and {Path(args.out) / 'samples.png'}")
    print(f"wall time: {time.perf_counter() - t0:.1f} s")
    return 0


def _compare(args) -> int:
    from t3unlearn.experiments.images import compare
    from t3unlearn.io import torch_threads

    _check_out(args.out)
    with torch_threads(args.threads, log=print):
        compare(args.preset, _families(args.families, "families"), [m.strip() for m in args.methods.split(",") if m.strip()],
                args.seeds, args.out, progress=not args.quiet, grids=not args.no_grids)
    return 0


def _exactness(args) -> int:
    import json
    from pathlib import Path

    from t3unlearn.errors import T3Error
    from t3unlearn.images.exactness import plot_check, run_check, table_markdown
    from t3unlearn.io import atomic_write, torch_threads

    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if not models or any(m not in ("analytic", "trained") for m in models):
        raise T3Error(f"--models takes analytic, trained or both, not {args.models!r}.")
    if args.n < 100 or args.steps < 2:
        raise T3Error("--n must be >= 100 and --steps >= 2.")
    if args.out:
        _check_out(args.out)
    with torch_threads(args.threads, log=print):
        rep = run_check(n=args.n, steps=args.steps, models=models, seed=args.seed, progress=not args.quiet)
    md = table_markdown(rep)
    print("\n" + md)
    st = rep["settings"]
    print(f"\n{st['n']} samples per run, {st['steps']} sampling steps; langevin: {st['langevin_steps']} corrector step(s) per "
          f"level + {st['final_langevin_steps']} at the last level with sigma >= 0.1; seed {st['seed']}; {rep['seconds']:.0f} s")
    if args.out:
        out = Path(args.out)
        with atomic_write(out / "exactness.md", "w", encoding="utf-8") as fh:
            fh.write(md + "\n")
        with atomic_write(out / "exactness.json", "w", encoding="utf-8") as fh:
            json.dump({"rows": rep["rows"], "settings": st, "train": rep["train"]}, fh, indent=1)
        plot_check(rep, out / "exactness.png")
        print(f"wrote {out / 'exactness.md'}, {out / 'exactness.json'}, {out / 'exactness.png'}")
    return 0
