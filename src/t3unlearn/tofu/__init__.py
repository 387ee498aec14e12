"""TOFU itself (Maini et al., 2024; ``locuslab/TOFU``, MIT), offline when a local copy is configured.

- ``tofu:CONFIG`` data sources read the directory in ``$T3UNLEARN_TOFU_DIR`` (TOFU's configs as
  ``CONFIG.jsonl`` / ``.json`` / ``.parquet``, e.g. a copy saved with ``datasets``) when it is set,
  else the Hugging Face hub, where ``datasets`` caches them after the first download.
- Tiny models trained on TOFU's own text, the way TOFU's models are made (see :func:`training_dir`):
  a tokenizer on the training text, a base pretrained on what a base model already knows (the real
  authors' and world facts' answers), then fine-tunes on ``full`` and on ``retain90/95/99``. On a
  2-core CPU they train on the authors the evaluation reads (see :data:`SUBSETS`); they are cached
  like the world's models and named ``tofu:full``, ``tofu:retain90``, ... wherever a model is asked for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from t3unlearn.errors import DataError

TRAINING_VERSION = "3"  # 2: the authors no evaluation reads pretrain the base; 3: calibration authors held out

# Which of TOFU's 200 authors the tiny models are fine-tuned on.
#  eval-authors: the 20 forget10 authors + the 20 retain_perturbed authors (800 of the 4000 items): every
#                author an evaluation of forget01/05/10 reads. full = those 40 authors; retainXX = full
#                minus forgetXX. The other 160 authors, which TOFU's full and retain models both learn and
#                no evaluation reads, go into the shared base's pretraining instead (see training_sets).
#  all:          all 4000 items (full) and TOFU's retainXX fine-tuned; about 5x the fine-tuning time.
SUBSETS = ("eval-authors", "all")
DEFAULT_SUBSET = "eval-authors"
# The pretraining corpus repeats the real-author and world-fact items this many times, so the small base
# learns them as a large model knows them (they are 217 of the ~3400 pretraining items).
KNOWLEDGE_REPEATS = 4
# Never-seen authors for oracle-free calibration: every CALIBRATION_STRIDE-th of the 160 authors that no evaluation
# reads (neither forget, holdout, retain_perturbed, real authors nor world facts), kept out of every tiny model's
# training, so calibrating on them reads nothing the evaluation reads (see calibration_rows).
CALIBRATION_STRIDE = 8
ITEMS_PER_AUTHOR = 20


def source() -> str:
    """Where TOFU's configs are read from: the local copy in ``$T3UNLEARN_TOFU_DIR``, else the hub id."""
    from t3unlearn.data import resolve_source

    location, _, kind = resolve_source("tofu")
    return location


def _rows(config: str, tofu_source: str | None = None) -> list[dict[str, Any]]:
    from t3unlearn.data import load_qa

    ds = load_qa(f"{tofu_source or source()}:{config}", what=f"TOFU {config}")
    return [{"question": r["question"], "answer": r["answer"]} for r in ds.to_list()]


def _block(full: list[dict[str, Any]], config: str, tofu_source: str | None) -> range:
    """Positions of ``config``'s rows in ``full``: TOFU's splits are contiguous runs of whole authors."""
    rows = _rows(config, tofu_source)
    questions = [r["question"] for r in rows]
    n = len(questions)
    for start in range(len(full) - n + 1):
        if full[start]["question"] == questions[0] and [r["question"] for r in full[start : start + n]] == questions:
            return range(start, start + n)
    raise DataError(f"TOFU {config} is not a contiguous run of rows of TOFU full; is the local copy complete?")


def _evaluated_rows(full: list[dict[str, Any]], tofu_source: str | None) -> set[int]:
    """Rows of ``full`` that an evaluation of forget01/05/10 reads: the forget10 and retain_perturbed authors."""
    return set(_block(full, "forget10", tofu_source)) | set(_block(full, "retain_perturbed", tofu_source))


def _calibration_rows(full: list[dict[str, Any]], tofu_source: str | None) -> set[int]:
    """Rows of ``full`` of the calibration authors: every CALIBRATION_STRIDE-th author among those no evaluation reads
    (TOFU's items come in whole authors of ITEMS_PER_AUTHOR contiguous rows)."""
    evaluated = _evaluated_rows(full, tofu_source)
    authors = [a for a in range(len(full) // ITEMS_PER_AUTHOR)
               if not evaluated & set(range(a * ITEMS_PER_AUTHOR, (a + 1) * ITEMS_PER_AUTHOR))]
    return {a * ITEMS_PER_AUTHOR + i for a in authors[::CALIBRATION_STRIDE] for i in range(ITEMS_PER_AUTHOR)}


def training_sets(subset: str = DEFAULT_SUBSET, tofu_source: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """The training files of the tiny TOFU models: ``pretrain``, ``full``, ``retain90/95/99``, and ``calibration``.

    ``pretrain`` is what the base knows before the fine-tunes: the question/answer pairs of ``real_authors``
    and ``world_facts`` (what a base model knows before TOFU; :data:`KNOWLEDGE_REPEATS` times) and, for
    ``eval-authors``, the authors that are in every fine-tuning set and that no evaluation reads. Moving
    them from both fine-tunes into the shared base changes no metric (the forget, retain_perturbed, holdout,
    real-author and world-fact items are exactly TOFU's) and gives the small base TOFU's language, which
    the 217 short real-author and world-fact answers alone do not. ``full`` and ``retainXX`` follow
    ``subset`` (:data:`SUBSETS`); items keep TOFU's order.

    ``calibration`` (``tofu:calibration``): 20 of the authors no evaluation reads (every
    :data:`CALIBRATION_STRIDE`-th), which no tiny model trains on (neither the base nor a fine-tune): never-seen items
    like the forget set for oracle-free calibration, disjoint from everything an evaluation reads.
    """
    if subset not in SUBSETS:
        raise DataError(f"unknown TOFU training subset {subset!r}; choose one of {', '.join(SUBSETS)}.")
    full = _rows("full", tofu_source)
    pretrain = (_rows("real_authors", tofu_source) + _rows("world_facts", tofu_source)) * KNOWLEDGE_REPEATS
    forget = {pct: set(_block(full, f"forget{pct}", tofu_source)) for pct in ("01", "05", "10")}
    calibration = _calibration_rows(full, tofu_source)
    keep = set(range(len(full))) - calibration
    if subset == "eval-authors":
        keep = _evaluated_rows(full, tofu_source)
        pretrain += [full[i] for i in range(len(full)) if i not in keep and i not in calibration]
    out = {"pretrain": pretrain, "full": [full[i] for i in sorted(keep)]}
    for pct, rows in forget.items():
        out[f"retain{100 - int(pct)}"] = [full[i] for i in sorted(keep - rows)]
    out["calibration"] = [full[i] for i in sorted(calibration)]
    return out


def training_dir(subset: str = DEFAULT_SUBSET, tofu_source: str | None = None) -> Path:
    """A training directory for :func:`t3unlearn.world.train.ensure_models` built from TOFU's data
    (cached under ``cache_home()/tofu``, keyed by the content of its files)."""
    from t3unlearn.io import atomic_dir, cache_home, fingerprint

    sets = training_sets(subset, tofu_source)
    key = fingerprint("t3-tofu-training", TRAINING_VERSION, subset, sets)
    path = cache_home() / "tofu" / f"{subset}-{key}"
    if (path / "world.json").is_file():
        return path
    with atomic_dir(path) as tmp:
        for name, rows in sets.items():
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as fh:
                for i, r in enumerate(rows):
                    fh.write(json.dumps({**r, "index": i}, ensure_ascii=False) + "\n")
        meta = {
            "name": "tiny-model training set derived from TOFU (locuslab/TOFU, MIT)",
            "preset": "tofu",
            "subset": subset,
            "source": tofu_source or source(),
            "training_version": TRAINING_VERSION,
            "sizes": {name: len(rows) for name, rows in sets.items()},
            "fingerprint": key,
        }
        (tmp / "world.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def ensure_models(names=("full", "retain90"), *, subset: str = DEFAULT_SUBSET, log=None, progress: bool = True,
                  **overrides) -> dict[str, Path]:
    """The tiny TOFU models ``names`` (``pretrained``, ``full``, ``retainXX``), trained once and cached."""
    from t3unlearn.world.train import ensure_models as _ensure

    return _ensure(training_dir(subset), names, log=log, progress=progress, **overrides)
