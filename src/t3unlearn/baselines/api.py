"""Run a baseline end to end: load the model and data, unlearn, save, report cost.

>>> from t3unlearn.baselines import unlearn_baseline
>>> result = unlearn_baseline("npo", "MODEL_DIR", "WORLD_DIR:forget10", "WORLD_DIR:retain90", "out/npo",
...                           config={"lr": 1e-4, "epochs": 5})                 # doctest: +SKIP
>>> result.cost.wall_seconds, result.cost.peak_rss_mb, result.cost.trainable_params   # doctest: +SKIP
>>> result.model, result.tokenizer, result.report["history"][-1]                       # doctest: +SKIP

Both functions return a :class:`t3unlearn.results.UnlearnResult`, as T3's ``unlearn`` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from t3unlearn.errors import T3Error
from t3unlearn.results import UnlearnResult

META_NAME = "t3unlearn_baseline.json"


def load_data(spec, what: str):
    """A data source spec (``DIR:CONFIG``, ``tofu:CONFIG``, a file) or an in-memory set."""
    if isinstance(spec, (str, Path)):
        from t3unlearn.data import load_qa

        return load_qa(str(spec), what=what)
    return spec


def find_idk(forget_spec) -> list[str] | None:
    """The ``idk.jsonl`` answers beside a directory-backed forget set (a built world has one)."""
    if not isinstance(forget_spec, (str, Path)):
        return None
    from t3unlearn.data import resolve_source

    try:
        location, _, kind = resolve_source(str(forget_spec))
    except T3Error:
        return None
    base = Path(location) if kind == "dir" else Path(location).parent if kind == "file" else None
    if base is None or not (base / "idk.jsonl").is_file():
        return None
    return load_idk(base / "idk.jsonl")


def load_idk(path) -> list[str]:
    """Answers from a jsonl file of ``{"answer": ...}`` lines (or a plain text file, one per line)."""
    path = Path(path)
    if not path.is_file():
        raise T3Error(f"idk file {path} does not exist; check the path, or leave it out for the idk.jsonl beside the "
                      "forget set (else built-in answers).")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                line = json.loads(line)["answer"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise T3Error(f"{path}: each line must be a JSON object with an 'answer'.") from None
        out.append(str(line))
    if not out:
        raise T3Error(f"{path} holds no answers.")
    return out


def load_base(model, tokenizer=None, loading: dict | None = None):
    """``(model, tokenizer)`` from a directory / hub id, or passed through. ``loading``: model-loading keywords
    for ``from_pretrained`` (``dtype``, ``device_map``, ``revision``, ``trust_remote_code``, ``attn_implementation``;
    see :mod:`t3unlearn.loading`); the tokenizer gets the ones it takes."""
    if isinstance(model, (str, Path)):
        from t3unlearn.lm import load_model, load_tokenizer
        from t3unlearn.loading import tokenizer_kwargs

        loading = dict(loading or {})
        return load_model(str(model), **loading), tokenizer or load_tokenizer(str(model), **tokenizer_kwargs(loading))
    if tokenizer is None:
        raise T3Error("pass the tokenizer along with an in-memory model.")
    return model, tokenizer


def save_model(model, tokenizer, out, meta: dict) -> Path:
    """``save_pretrained`` (safetensors) + tokenizer + ``t3unlearn_baseline.json``, atomically."""
    from t3unlearn.baselines.uld import OUTPUT_MARKERS
    from t3unlearn.io import atomic_dir, save_json

    with atomic_dir(out, marker=OUTPUT_MARKERS, what="a baseline's output") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        save_json(tmp / META_NAME, meta)
    return Path(out)


def _paths(spec) -> str | None:
    return str(spec) if isinstance(spec, (str, Path)) else None


def unlearn_baseline(
    method: str,
    model,
    forget,
    retain,
    out=None,
    *,
    tokenizer=None,
    params: dict | None = None,
    config: dict | None = None,
    idk: Sequence[str] | str | None = None,
    progress: bool = True,
    loading: dict | None = None,
) -> UnlearnResult:
    """Unlearn ``forget`` from ``model`` with a fine-tuning baseline; save to ``out`` if given.

    ``model``: a model directory / hub id, or an in-memory model (then pass ``tokenizer``).
    ``forget`` / ``retain``: data sources (``DIR:CONFIG``, ``tofu:CONFIG``, a .jsonl file)
    or loaded sets. ``params``: the method's settings; ``config``: the optimization settings
    (:class:`~t3unlearn.baselines.trainer.BaselineConfig`: lr, epochs, bf16, gradient_checkpointing, ...).
    ``idk``: "I don't know" answers for IdkDPO (a list or a file); by default the ``idk.jsonl``
    beside the forget set, else a built-in list. ``loading``: model-loading keywords for a ``model`` given
    as a path (see :func:`load_base`). Returns an :class:`UnlearnResult` whose ``cost`` is
    the unlearning step's (loading and saving excluded) and whose ``report`` is the training record.
    """
    from t3unlearn.baselines.methods import get_method
    from t3unlearn.baselines.trainer import train
    from t3unlearn.data import check_disjoint
    from t3unlearn.results import measure

    m = get_method(method)
    if m.name == "uld":
        return train_uld(model, forget, retain, out, tokenizer=tokenizer, params=params, config=config, progress=progress,
                         loading=loading)
    if isinstance(idk, (str, Path)):
        idk = load_idk(idk)
    if m.uses_idk and idk is None:
        idk = find_idk(forget)
    forget_ds = load_data(forget, "forget set") if m.data == "paired" else None
    retain_ds = load_data(retain, "retain set")
    if forget_ds is not None and hasattr(forget_ds, "column_names") and hasattr(retain_ds, "column_names"):
        check_disjoint(forget_ds, retain_ds)
    net, tok = load_base(model, tokenizer, loading)
    with measure() as meas:
        record = train(m, net, tok, forget_ds, retain_ds, params=params, config=config, idk=idk, progress=progress)
    cost = meas.cost(record["trainable_params"])
    record.update(base_model=_paths(model), forget=_paths(forget), retain=_paths(retain))
    if out is not None:
        meta = {k: v for k, v in record.items() if k != "history"}
        save_model(net, tok, out, {**meta, "final": record["history"][-1:], "cost": cost.to_dict()})
    return UnlearnResult(net, tok, record, cost, Path(out) if out is not None else None, m.name)


def train_uld(
    model,
    forget,
    retain,
    out=None,
    *,
    tokenizer=None,
    params: dict | None = None,
    config: dict | None = None,
    progress: bool = True,
    loading: dict | None = None,
) -> UnlearnResult:
    """Train a ULD assistant for ``model`` and (if ``out``) save the ULD model directory.

    ``params``: ``gamma`` (forget NLL weight), ``retain_weight`` (KL(U || p) on retain),
    ``alpha`` (inference: base - alpha * assistant), ``assistant_layers`` (``"half"``, ``"all"``
    or a number). ``model`` must be a directory (the ULD directory refers to it) unless no
    ``out`` is given. ``loading``: model-loading keywords for a ``model`` given as a path (give them again to
    ``ULDForCausalLM.from_pretrained``). Returns an :class:`UnlearnResult` whose model is the :class:`ULDForCausalLM`.
    """
    from t3unlearn.baselines.methods import get_method
    from t3unlearn.baselines.trainer import train
    from t3unlearn.baselines.uld import ULDForCausalLM, make_assistant
    from t3unlearn.data import check_disjoint
    from t3unlearn.results import measure

    m = get_method("uld")
    params = {**m.defaults, **(params or {})}
    if out is not None and not isinstance(model, (str, Path)):
        raise T3Error("to save a ULD model, give the base as a directory: the saved model refers to it by path.")
    forget_ds = load_data(forget, "forget set")
    retain_ds = load_data(retain, "retain set")
    if hasattr(forget_ds, "column_names") and hasattr(retain_ds, "column_names"):
        check_disjoint(forget_ds, retain_ds)
    base, tok = load_base(model, tokenizer, loading)
    base.requires_grad_(False)
    with measure() as meas:
        assistant = make_assistant(base, params["assistant_layers"])
        record = train(m, assistant, tok, forget_ds, retain_ds, params=params, config=config, progress=progress)
    cost = meas.cost(record["trainable_params"])
    base_path = str(Path(model).resolve()) if isinstance(model, (str, Path)) and Path(model).exists() else _paths(model)
    uld = ULDForCausalLM.from_models(base, assistant, alpha=float(params["alpha"]), base_path=base_path)
    record.update(base_model=base_path, assistant_layers=assistant.config.num_hidden_layers)
    if out is not None:
        uld.save_pretrained(out, extra={"train": {k: v for k, v in record.items() if k != "history"}, "cost": cost.to_dict()})
    return UnlearnResult(uld, tok, record, cost, Path(out) if out is not None else None, "uld")
