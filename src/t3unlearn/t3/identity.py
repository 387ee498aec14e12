"""Which base a T3 head belongs to: a dtype-independent identity recorded at training and checked at load."""

from __future__ import annotations

import hashlib

import torch

from t3unlearn.errors import ModelError
from t3unlearn.io import fingerprint
from t3unlearn.t3.feature_cache import _STATE_HASH_LIMIT, _weights_file_stats


def base_identity(model) -> str | None:
    """Which base a head belongs to, whatever dtype, device or attention kernel it was loaded with: the class,
    the config (less its dtype and private keys) and the weights rounded to bfloat16 (a float32 and a bfloat16
    load of one checkpoint agree); above 2 GB the weight files' names, sizes and times (or hub id and revision)."""
    cfg = model.config.to_dict() if hasattr(model.config, "to_dict") else {}
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in
           ("transformers_version", "name_or_path", "dtype", "torch_dtype", "attn_implementation", "use_cache", "architectures")}
    size = sum(p.numel() for p in model.parameters()) * 2  # bytes in bfloat16: the same branch in any dtype
    if size > _STATE_HASH_LIMIT:
        try:
            return fingerprint("identity", type(model).__name__, cfg, _weights_file_stats(model))
        except ModelError:  # over 2 GB and not from a local directory or a hub revision: nothing to record
            return None
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        t = p.detach().to("cpu", torch.bfloat16).contiguous()
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return fingerprint("identity", type(model).__name__, cfg, h.hexdigest()[:16])


def check_base_fingerprint(cfg, base_model, head_dir) -> None:
    """A ModelError when ``base_model`` is not the base the head was trained on (its recorded fingerprint):
    another checkpoint of the same shape (base vs instruct, another fine-tune) would be guided wrongly without
    a word. Heads that recorded no fingerprint, and bases too large to fingerprint, are not checked."""
    from t3unlearn.t3.feature_cache import model_fingerprint

    training = cfg.training or {}
    want_id, want_fp = training.get("base_identity"), training.get("base_fingerprint")
    if not (want_id or want_fp):
        return
    try:
        got, want = (base_identity(base_model), want_id) if want_id else (model_fingerprint(base_model), want_fp)
    except ModelError:  # over 2 GB and not from a local directory: nothing to compare
        return
    if got is not None and got != want:
        dtype = "" if want_id else " (or it was loaded in another dtype than at training)"
        raise ModelError(f"the head in {head_dir} was trained on another base: {cfg.base_model_name_or_path} with fingerprint "
                         f"{want[:16]}, this one has {got[:16]}{dtype}; its weights differ (another checkpoint of the same "
                         "shape, e.g. base vs instruct). Use the base the head was trained on, or add --force "
                         "(force=True) if they are the same model.")
