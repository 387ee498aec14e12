"""Cached units of the image job: models, the evaluator, unlearning runs and evaluations.

Everything lives under ``cache_home()/images`` and is keyed by a fingerprint of what shapes it
(benchmark content, architecture, training settings, seed, method settings, source weights), so a
rerun reuses every finished unit and an interrupted one redoes only the unit it was in:

- ``models/<preset>-<family>-<role>-s<seed>-<fp>/``: ``full`` (trained on X) and ``retain`` (the
  oracle, trained on X \\ A) generators;
- ``classifier/<fp>/``: the evaluator's classifier;
- ``runs/<preset>-<family>-<method>-s<seed>-<fp>/``: an unlearned generator with ``run.json``
  (settings, per-step history, the λ trajectory) and, for Adaptive-λ, ``lambda_net.safetensors``;
- ``eval/<fp>.json``: the metrics of one generator under one evaluation setting.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from t3unlearn.errors import ModelError, T3Error
from t3unlearn.images.models import FAMILIES, META_FILE, ImageGenerator, weights_fingerprint
from t3unlearn.images.presets import get_preset

MODELS_VERSION = 1
RUNS_VERSION = 1
EVAL_VERSION = 1
ROLES = ("full", "retain")


def _root() -> Path:
    from t3unlearn.io import cache_home

    return cache_home() / "images"


def load_bench(preset="default"):
    from t3unlearn.images.data import ensure_benchmark

    return ensure_benchmark(get_preset(preset).bench)


def ensure_generator(family: str, role: str = "full", *, preset="default", seed: int = 0, progress: bool = True,
                     log=None) -> Path:
    """The directory of the ``role`` generator (``full`` or the ``retain`` oracle), trained if missing."""
    from t3unlearn.images.trainer import TrainConfig, train_generator
    from t3unlearn.io import fingerprint

    if family not in FAMILIES:
        raise T3Error(f"unknown family {family!r}; choose ddpm or vae.")
    if role not in ROLES:
        raise T3Error(f"unknown model role {role!r}; choose full (trained on everything) or retain (the oracle).")
    P = get_preset(preset)
    bench = load_bench(P)
    cfg = TrainConfig.from_dict({**P.train_config(family), "seed": seed})
    arch = P.arch(family)
    fp = fingerprint("t3-images-model", MODELS_VERSION, bench.fingerprint(), family, role, asdict(arch), asdict(cfg))
    path = _root() / "models" / f"{P.name}-{family}-{role}-s{seed}-{fp}"
    if (path / META_FILE).is_file():
        return path
    if log:
        log(f"training the {family} {role} model (preset {P.name}, seed {seed}) ...")
    images, labels = (bench.train, bench.train_labels) if role == "full" else (bench.retain, bench.retain_labels)
    gen, record = train_generator(family, images, labels, arch=arch, config=cfg, image_size=images.shape[-1],
                                  progress=progress, desc=f"train {family} {role}")
    gen.meta.update({"role": role, "preset": P.name, "bench": bench.fingerprint(), "forget_label": bench.forget_label})
    gen.save(path)
    if log:
        log(f"  {family} {role}: {record['train_seconds']:.1f} s, final loss {record['final_loss']:.4g}")
    return path


def parse_model_spec(spec: str) -> tuple[str, str] | None:
    """``ddpm:full`` / ``vae:retain`` -> ``(family, role)``; anything else (a directory) -> None."""
    head, sep, tail = str(spec).partition(":")
    if sep and head in FAMILIES and tail in ROLES and not Path(str(spec)).exists():
        return head, tail
    return None


def resolve_generator(spec: str, *, preset="default", seed: int = 0, progress: bool = True, log=None) -> Path:
    """A generator directory from ``FAMILY:ROLE`` (trained and cached on first use) or a path."""
    parsed = parse_model_spec(spec)
    if parsed is not None:
        return ensure_generator(parsed[0], parsed[1], preset=preset, seed=seed, progress=progress, log=log)
    path = Path(spec)
    if not (path / META_FILE).is_file():
        raise ModelError(f"{spec!r} is neither a generator directory nor FAMILY:ROLE (ddpm:full, ddpm:retain, "
                         "vae:full, vae:retain).")
    return path


def ensure_evaluator(preset="default", *, progress: bool = True):
    """``(benchmark, classifier, classifier record)`` of ``preset`` (the classifier cached)."""
    from t3unlearn.images.evaluator import ClassifierConfig, ensure_classifier

    P = get_preset(preset)
    bench = load_bench(P)
    clf, rec = ensure_classifier(bench, ClassifierConfig(**P.classifier), progress=progress)
    return bench, clf, rec


def eval_config(preset="default", **overrides):
    from t3unlearn.images.evaluator import EvalConfig

    return EvalConfig(**{**get_preset(preset).eval, **{k: v for k, v in overrides.items() if v is not None}})


def evaluate_cached(gen_path: str | Path, *, preset="default", config=None, progress: bool = True) -> dict:
    """The metrics of the generator at ``gen_path`` (cached per weights and evaluation settings)."""
    from t3unlearn.images.evaluator import evaluate_generator
    from t3unlearn.io import fingerprint, load_json, save_json

    bench, clf, clf_rec = ensure_evaluator(preset, progress=progress)
    cfg = config or eval_config(preset)
    key = fingerprint("t3-images-eval", EVAL_VERSION, weights_fingerprint(gen_path), bench.fingerprint(),
                      clf_rec.get("config"), asdict(cfg))
    path = _root() / "eval" / f"{key}.json"
    if path.is_file():
        try:
            return load_json(path)
        except T3Error:  # a corrupt cache entry is recomputed
            pass
    gen = ImageGenerator.load(gen_path)
    res = evaluate_generator(gen, bench, clf, cfg, progress=progress)
    res["classifier"] = {k: clf_rec[k] for k in ("test_accuracy", "test_glyph_recall") if k in clf_rec}
    save_json(path, res)
    return res


def _finished(path: Path) -> dict | None:
    """The run record of a finished cached run at ``path``, or None (missing or corrupt: made again)."""
    from t3unlearn.io import load_json

    if (path / "run.json").is_file() and (path / META_FILE).is_file():
        try:
            return load_json(path / "run.json")
        except T3Error:
            return None
    return None


def _load_family(src: Path, family: str) -> ImageGenerator:
    gen = ImageGenerator.load(src)
    if gen.family != family:
        raise ModelError(f"{src} is a {gen.family} model, not {family}.")
    return gen


def _save_run(gen: ImageGenerator, record: dict, path: Path) -> Path:
    """Save an unlearned generator with ``run.json`` (and the λ network) atomically."""

    def extra(tmp: Path) -> None:
        net = record.get("inference_net")
        if net is not None:
            import torch
            from safetensors.torch import save_file

            save_file({k: torch.tensor(v) for k, v in net.items()}, str(tmp / "lambda_net.safetensors"))
        rec = {k: v for k, v in record.items() if k != "inference_net"}
        (tmp / "run.json").write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")

    return gen.save(path, extra=extra)


def save_unlearned(gen: ImageGenerator, record: dict, out: str | Path) -> Path:
    """Write an unlearned generator and its run record to ``out`` (atomically)."""
    return _save_run(gen, record, Path(out))


def unlearn_cached(family: str, method: str, *, preset="default", seed: int = 0, params: dict | None = None,
                   config: dict | None = None, model: str | Path | None = None, progress: bool = True) -> tuple[Path, dict]:
    """Unlearn the forget set from ``model`` (default: the preset's full ``family`` model) with
    ``method``; the run is cached. Returns ``(run directory, run record)``."""
    from t3unlearn.images.methods import get_method, resolve_params
    from t3unlearn.images.trainer import UnlearnConfig, unlearn
    from t3unlearn.io import fingerprint

    P = get_preset(preset)
    m = get_method(method)
    if family not in m.families:
        raise T3Error(f"{m.title} applies to {', '.join(m.families)} models, not {family}.")
    if m.style == "guidance":
        return t3_cached(family, m.name, preset=P, seed=seed, params=params, config=config, model=model,
                         progress=progress)
    if m.style == "distill":
        return sfd_cached(m.name, preset=P, seed=seed, params=params, config=config, model=model, progress=progress)
    base_cfg, base_params = P.unlearn_settings(family, m.name)
    cfg = UnlearnConfig.from_dict({**base_cfg, **(config or {}), "seed": seed})
    prm = resolve_params(m, {**base_params, **(params or {})})
    src = Path(model) if model is not None else ensure_generator(family, "full", preset=P, progress=progress)
    bench = load_bench(P)
    key = fingerprint("t3-images-run", RUNS_VERSION, weights_fingerprint(src), bench.fingerprint(), m.name, prm, asdict(cfg))
    path = _root() / "runs" / f"{P.name}-{family}-{m.name}-s{seed}-{key}"
    done = _finished(path)
    if done is not None:
        return path, done
    gen = _load_family(src, family)
    new, record = unlearn(gen, bench, m, params=prm, config=cfg, progress=progress,
                          desc=f"{family} {m.name} s{seed}")
    record["source"] = str(src)
    _save_run(new, record, path)
    return path, {k: v for k, v in record.items() if k != "inference_net"}


def t3_cached(family: str, method: str = "t3", *, preset="default", seed: int = 0, params: dict | None = None,
              config: dict | None = None, model: str | Path | None = None, progress: bool = True) -> tuple[Path, dict]:
    """A T3 head (``method`` t3, or cg for T = 1) over ``model`` (default: the preset's full ``family``
    model), cached like any unlearning run. Only the classifier trains; the run's wall time is its
    training. Returns ``(run directory, run record)``."""
    from t3unlearn.images.methods import get_method, resolve_params
    from t3unlearn.images.t3 import HEAD_VERSION, ClassifierTrainConfig, ImageGuidance, make_t3, save_guided
    from t3unlearn.io import fingerprint

    P = get_preset(preset)
    m = get_method(method)
    base_cfg, base_params = P.unlearn_settings(family, m.name)
    cfg = ClassifierTrainConfig.from_dict({**base_cfg, **(config or {}), "seed": seed})
    guidance = ImageGuidance.from_dict(resolve_params(m, {**base_params, **(params or {})}))
    src = Path(model) if model is not None else ensure_generator(family, "full", preset=P, progress=progress)
    bench = load_bench(P)
    # the classifier depends on the data, the base and its training settings only: t3 and cg share it
    key = fingerprint("t3-images-head", HEAD_VERSION, weights_fingerprint(src), bench.fingerprint(), asdict(cfg))
    # keyed under the scheme's old name, so runs cached before the rename are found again
    gkey = fingerprint(key, {("tempering" if k == "scheme" else k): v for k, v in asdict(guidance).items()})
    path = _root() / "runs" / f"{P.name}-{family}-{m.name}-s{seed}-{gkey}"
    done = _finished(path)
    if done is not None:
        return path, done
    gen = _load_family(src, family)
    shared = _root() / "runs" / f"{P.name}-{family}-t3head-s{seed}-{key}"
    record = _finished(shared)
    if record is not None:
        from t3unlearn.images.t3 import T3ImageHead

        head = T3ImageHead.load(shared)
        head.guidance = guidance
        record = {**record, "method": m.name, "params": asdict(guidance)}
    else:
        head, record = make_t3(gen, bench, guidance=guidance, config=cfg, progress=progress,
                               desc=f"{family} t3 classifier s{seed}")
        record["source"] = str(src)
        save_guided(head, src, shared, record=record)
        record = {**record, "method": m.name}
    save_guided(head, src, path, record=record)
    return path, record


def sfd_cached(method: str = "sfd", *, preset="default", seed: int = 0, params: dict | None = None,
               config: dict | None = None, model: str | Path | None = None, progress: bool = True) -> tuple[Path, dict]:
    """A one-step generator distilled by SFD from ``model`` (default: the preset's full DDPM), cached like
    any unlearning run. Returns ``(run directory, run record)``."""
    from t3unlearn.images.methods import get_method, resolve_params
    from t3unlearn.images.sfd import SFDConfig, distill
    from t3unlearn.io import fingerprint

    P = get_preset(preset)
    m = get_method(method)
    base_cfg, base_params = P.unlearn_settings("ddpm", m.name)
    cfg = SFDConfig.from_dict({**resolve_params(m, {**base_params, **(params or {})}), **base_cfg, **(config or {}),
                               "seed": seed})
    src = Path(model) if model is not None else ensure_generator("ddpm", "full", preset=P, progress=progress)
    key = fingerprint("t3-images-sfd", RUNS_VERSION, weights_fingerprint(src), cfg.key())
    path = _root() / "runs" / f"{P.name}-ddpm-{m.name}-s{seed}-{key}"
    done = _finished(path)
    if done is not None:
        return path, done
    new, record = distill(_load_family(src, "ddpm"), cfg, progress=progress, desc=f"ddpm {m.name} s{seed}")
    record = {**record, "method": m.name, "source": str(src)}
    _save_run(new, record, path)
    return path, record
