"""The offline world: a synthetic TOFU-shaped benchmark and the tiny models trained on it.

- :func:`ensure_world` builds (once, cached) a world of fictitious authors in TOFU's configs;
- :func:`build_world` writes one to a chosen directory;
- :func:`ensure_models` trains (once, cached) the tiny pretrained / full / retain models.

See ``docs/world.md``.
"""

from __future__ import annotations

from pathlib import Path

from t3unlearn.world.generate import CONFIGS, PRESETS, WorldSettings, settings_for

__all__ = ["CONFIGS", "PRESETS", "WorldSettings", "build_world", "ensure_world", "ensure_models", "settings_for"]


def build_world(out: str | Path, preset: str = "default", **overrides) -> Path:
    """Write the world of ``preset`` (with ``overrides`` such as ``seed=1, n_authors=100``) to ``out``: a new or empty
    directory, or a world built before (replaced whole); anything else is refused, never deleted."""
    from t3unlearn.io import check_replaceable
    from t3unlearn.world.generate import write_world

    check_replaceable(out, "world.json", "a built world", option="out")
    return write_world(settings_for(preset, **overrides), out, preset=preset)


def ensure_world(preset: str = "default", **overrides) -> Path:
    """The world directory of ``preset``: built under ``cache_home()/worlds`` on first use, reused after."""
    from t3unlearn.io import cache_home
    from t3unlearn.world.generate import world_fingerprint, write_world

    from filelock import FileLock

    settings = settings_for(preset, **overrides)
    path = cache_home() / "worlds" / f"{preset}-{world_fingerprint(settings)}"
    if (path / "world.json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):  # two processes building the same world: one builds, one waits
        if not (path / "world.json").is_file():
            write_world(settings, path, preset=preset)
    return path


def ensure_models(world_dir, names=("full", "retain90"), **kwargs) -> dict[str, Path]:
    """Model directories for ``names`` (``pretrained``, ``full``, ``retainXX``), trained if missing.
    ``kwargs``: ``log``, ``progress`` and training settings (see :func:`t3unlearn.world.train.ensure_models`)."""
    from t3unlearn.world.train import ensure_models as _ensure

    return _ensure(world_dir, names, **kwargs)
