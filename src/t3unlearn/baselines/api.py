"""Run a baseline end to end: load the model and data, unlearn, save, report cost.

>>> from t3unlearn.baselines import unlearn_baseline
>>> rec = unlearn_baseline("npo", "MODEL_DIR", "WORLD_DIR:forget10", "WORLD_DIR:retain90", "out/npo",
...                        config={"lr": 1e-4, "epochs": 5})                    # doctest: +SKIP
>>> rec["wall_seconds"], rec["peak_rss_mb"], rec["trainable_params"]        # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from t3unlearn.errors import T3Error

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
        raise T3Error(f"idk file {path} does not exist.")
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


def load_base(model, tokenizer=None):
    """``(model, tokenizer)`` from a directory / hub id, or passed through."""
    if isinstance(model, (str, Path)):
        from transformers import AutoModelForCausalLM

        from t3unlearn.io import default_device
        from t3unlearn.lm import load_tokenizer

        try:
            m = AutoModelForCausalLM.from_pretrained(str(model), dtype="auto")
        except OSError as exc:
            raise T3Error(f"could not load the model {model!r}: {exc}".split("\n")[0]) from None
        return m.to(default_device()), tokenizer or load_tokenizer(str(model))
    if tokenizer is None:
        raise T3Error("pass the tokenizer along with an in-memory model.")
    return model, tokenizer


def save_model(model, tokenizer, out, meta: dict) -> Path:
    """``save_pretrained`` (safetensors) + tokenizer + ``t3unlearn_baseline.json``, atomically."""
    from t3unlearn.io import atomic_dir, save_json

    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        save_json(tmp / META_NAME, meta)
    return Path(out)


def _cost(record: dict, m) -> dict:
    record.update(m.record())
    record.pop("history_full", None)
    return record


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
) -> dict:
    """Unlearn ``forget`` from ``model`` with a fine-tuning baseline; save to ``out`` if given.

    ``model``: a model directory / hub id, or an in-memory model (then pass ``tokenizer``).
    ``forget`` / ``retain``: data sources (``DIR:CONFIG``, ``tofu:CONFIG``, a .jsonl file)
    or loaded sets. ``idk``: "I don't know" answers for IdkDPO (a list or a file); by default
    the ``idk.jsonl`` beside the forget set, else a built-in list. Returns the training record
    plus ``wall_seconds`` and ``peak_rss_mb`` of the unlearning step (loading and saving excluded).
    """
    from t3unlearn.baselines.measure import Measure
    from t3unlearn.baselines.methods import get_method
    from t3unlearn.baselines.trainer import train
    from t3unlearn.data import check_disjoint

    m = get_method(method)
    if m.name == "uld":
        return train_uld(model, forget, retain, out, tokenizer=tokenizer, params=params, config=config, progress=progress)
    if isinstance(idk, (str, Path)):
        idk = load_idk(idk)
    if m.uses_idk and idk is None:
        idk = find_idk(forget)
    forget_ds = load_data(forget, "forget set") if m.data == "paired" else None
    retain_ds = load_data(retain, "retain set")
    if forget_ds is not None and hasattr(forget_ds, "column_names") and hasattr(retain_ds, "column_names"):
        check_disjoint(forget_ds, retain_ds)
    base_path = str(model) if isinstance(model, (str, Path)) else None
    net, tok = load_base(model, tokenizer)
    with Measure() as meas:
        record = train(m, net, tok, forget_ds, retain_ds, params=params, config=config, idk=idk, progress=progress)
    record = _cost(record, meas)
    record.update(base_model=base_path, forget=str(forget) if isinstance(forget, (str, Path)) else None,
                  retain=str(retain) if isinstance(retain, (str, Path)) else None)
    if out is not None:
        save_model(net, tok, out, {k: v for k, v in record.items() if k != "history"} | {"final": record["history"][-1:] })
        record["out"] = str(out)
    record["model"] = net
    record["tokenizer"] = tok
    return record


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
) -> dict:
    """Train a ULD assistant for ``model`` and (if ``out``) save the ULD model directory.

    ``params``: ``gamma`` (forget NLL weight), ``retain_weight`` (KL(U || p) on retain),
    ``alpha`` (inference: base - alpha * assistant), ``assistant_layers`` (``"half"``, ``"all"``
    or a number). ``model`` must be a directory (the ULD directory refers to it) unless no
    ``out`` is given.
    """
    from t3unlearn.baselines.measure import Measure
    from t3unlearn.baselines.methods import get_method
    from t3unlearn.baselines.trainer import train
    from t3unlearn.baselines.uld import ULDForCausalLM, make_assistant
    from t3unlearn.data import check_disjoint

    m = get_method("uld")
    params = {**m.defaults, **(params or {})}
    if out is not None and not isinstance(model, (str, Path)):
        raise T3Error("to save a ULD model, give the base as a directory: the saved model refers to it by path.")
    forget_ds = load_data(forget, "forget set")
    retain_ds = load_data(retain, "retain set")
    if hasattr(forget_ds, "column_names") and hasattr(retain_ds, "column_names"):
        check_disjoint(forget_ds, retain_ds)
    base, tok = load_base(model, tokenizer)
    base.requires_grad_(False)
    with Measure() as meas:
        assistant = make_assistant(base, params["assistant_layers"])
        record = train(m, assistant, tok, forget_ds, retain_ds, params=params, config=config, progress=progress)
    record = _cost(record, meas)
    base_path = str(Path(model).resolve()) if isinstance(model, (str, Path)) and Path(model).exists() else (str(model) if isinstance(model, (str, Path)) else None)
    uld = ULDForCausalLM.from_models(base, assistant, alpha=float(params["alpha"]), base_path=base_path)
    record.update(base_model=base_path, assistant_layers=assistant.config.num_hidden_layers)
    if out is not None:
        uld.save_pretrained(out, extra={"train": {k: v for k, v in record.items() if k != "history"}})
        record["out"] = str(out)
    record["model"] = uld
    record["tokenizer"] = tok
    return record
