"""The default world's models as trained once and shipped with the package.

Training the default world's tokenizer, pretrained base, ``full`` and ``retain90`` models takes 600–700 CPU seconds
(the other splits' oracles ``retain95`` and ``retain99`` 200 more each), and the result depends on the machine (float
rounding differs between CPUs), so every machine would get slightly different models and figures. The package
therefore ships one training of the five (seed 0, float32 safetensors, 21 MB) under ``t3unlearn/world/models/``, laid out as the model cache is: ``<preset>-<fingerprint>/<name>``. The
fingerprint covers the world's training files, every training setting and the recipe's version
(:func:`t3unlearn.world.train.models_root`), so a shipped model is used only for exactly the data and settings it was
trained with; another world, seed or setting is trained as before.

:func:`unpack` copies a shipped model into the cache the first time it is asked for (whole or not at all).
``T3UNLEARN_TRAIN_MODELS=1`` (``t3unlearn demo --train-models``) never does: the models are then trained here.
``scripts/ship-world-models.sh`` trains and lays out a new set when the world or the recipe changes
(``tests/test_world_models.py`` fails until it is run).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

SHIPPED = Path(__file__).parent / "models"


def enabled() -> bool:
    """Whether shipped models may be used (not when ``$T3UNLEARN_TRAIN_MODELS=1``)."""
    return os.environ.get("T3UNLEARN_TRAIN_MODELS") != "1"


def shipped(path: str | os.PathLike) -> Path | None:
    """The shipped copy of the cache entry ``path`` (``.../models/<root>/<name>``), or None."""
    path = Path(path)
    src = SHIPPED / path.parent.name / path.name
    return src if (src / "model.safetensors").is_file() else None


def unpack(path: str | os.PathLike, log=None) -> bool:
    """Copy the shipped model for the cache entry ``path`` into place (atomically), with the tokenizer beside a
    shipped pretrained base; False when none is shipped or shipped models are turned off."""
    from t3unlearn.io import atomic_dir, atomic_write

    path = Path(path)
    src = shipped(path) if enabled() else None
    if src is None:
        return False
    extra = [p for p in (src.parent / "tokenizer", src.parent / "settings.json") if p.exists()]
    for item in extra:
        target = path.parent / item.name
        if item.is_dir() and not (target / "tokenizer.json").is_file():
            with atomic_dir(target) as tmp:
                for f in item.iterdir():
                    shutil.copy2(f, tmp / f.name)
        elif item.is_file() and not target.is_file():
            with atomic_write(target, "wb") as fh:
                fh.write(item.read_bytes())
    with atomic_dir(path) as tmp:
        for f in src.iterdir():
            shutil.copy2(f, tmp / f.name)
    if log is not None:
        log(f"{path.name}: the model shipped with t3unlearn (one training, seed 0; 't3unlearn demo --train-models' "
            f"trains it here) -> {path}")
    return True


__all__ = ["SHIPPED", "enabled", "shipped", "unpack"]
