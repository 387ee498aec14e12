"""Results files in the reference framework's layout, and a reader for them (ours or theirs).

A results directory holds three files:

- ``TOFU_EVAL.json``: one object keyed by metric name; each value has ``agg_value`` and, for
  per-item metrics, ``value_by_index`` keyed by the item index as a string -- the layout
  open-unlearning writes, so its published retain-model logs can serve as references for
  forget quality and privleak, and our results can be read by its tools;
- ``TOFU_SUMMARY.json``: metric name -> aggregate value;
- ``run_info.json``: what produced the results (model, head, split, benchmark, settings,
  package versions, wall time).

:meth:`EvalResults.load` reads a directory or any of these files, including the reference
framework's published ``TOFU_EVAL.json`` (where some metrics may be missing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t3unlearn.errors import T3Error

EVAL_FILE = "TOFU_EVAL.json"
SUMMARY_FILE = "TOFU_SUMMARY.json"
INFO_FILE = "run_info.json"


def _finite(x: Any) -> float | None:
    """A float, or None for None / NaN / non-numbers (JSON has no NaN)."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _index_key(k: str):
    try:
        return (0, int(k))
    except (TypeError, ValueError):
        return (1, str(k))


@dataclass
class EvalResults:
    """A model's TOFU results: ``metrics`` in the TOFU_EVAL.json layout, ``info`` = run_info.json."""

    metrics: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    # ------------------------------------------------------------------ access
    @property
    def name(self) -> str:
        """A label for tables and plots: run_info's ``name``, else the directory name."""
        if self.info.get("name"):
            return str(self.info["name"])
        if self.path is not None:
            p = self.path if self.path.is_dir() else self.path.parent
            return p.name or str(p)
        return "model"

    def agg(self, metric: str) -> float | None:
        """The aggregate of one metric (None where missing or not computed)."""
        entry = self.metrics.get(metric)
        if isinstance(entry, dict):
            return _finite(entry.get("agg_value"))
        return _finite(entry)

    def summary(self) -> dict[str, float | None]:
        """Metric name -> aggregate, for every metric present (the TOFU_SUMMARY.json content)."""
        return {name: self.agg(name) for name in self.metrics}

    def per_index(self, metric: str, key: str = "score") -> dict[str, Any] | None:
        """``{index: value_by_index[index][key]}`` of a metric, or None when it has no per-item values."""
        entry = self.metrics.get(metric)
        if not isinstance(entry, dict) or not isinstance(entry.get("value_by_index"), dict):
            return None
        out = {}
        for idx in sorted(entry["value_by_index"], key=_index_key):
            item = entry["value_by_index"][idx]
            out[idx] = item.get(key) if isinstance(item, dict) else item
        return out

    def forget_truth_ratios(self) -> list[float] | None:
        """Per-item forget truth ratios (raw TR, the ``score`` of ``forget_truth_ratio``), in index order.

        This is what a retain model's results contribute to forget quality. None if absent.
        """
        scores = self.per_index("forget_truth_ratio")
        if not scores:
            return None
        values = [v for v in (_finite(s) for s in scores.values()) if v is not None]
        return values or None

    def mia_min_k_auc(self) -> float | None:
        """The min-k MIA AUC (``mia_min_k``), the reference for privleak. None if absent."""
        entry = self.metrics.get("mia_min_k")
        if isinstance(entry, dict):
            return _finite(entry.get("auc", entry.get("agg_value")))
        return _finite(entry)

    # ------------------------------------------------------------------ files
    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write TOFU_EVAL.json, TOFU_SUMMARY.json and run_info.json into ``out_dir``.

        Each file is written to a temporary name first and the three are renamed into place together,
        TOFU_EVAL.json last: a killed run leaves either the previous results or the new ones.
        """
        import json

        from t3unlearn.io import atomic_write

        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise T3Error(f"{out} is a file; give a directory for the results.")
        paths = {"eval": out / EVAL_FILE, "summary": out / SUMMARY_FILE, "info": out / INFO_FILE}
        content = {"eval": self.metrics, "summary": self.summary(), "info": self.info}
        # the innermost file is renamed first: run_info, then the summary, then TOFU_EVAL.json
        with atomic_write(paths["eval"], "w", encoding="utf-8") as fe, \
                atomic_write(paths["summary"], "w", encoding="utf-8") as fs, \
                atomic_write(paths["info"], "w", encoding="utf-8") as fi:
            for key, fh in (("eval", fe), ("summary", fs), ("info", fi)):
                json.dump(_jsonable(content[key]), fh, indent=2, ensure_ascii=False)
                fh.write("\n")
        self.path = out
        return paths

    @classmethod
    def load(cls, path: str | Path) -> "EvalResults":
        """Read results from a directory, a ``*_EVAL.json`` or a ``*_SUMMARY.json`` file.

        Accepts the reference framework's files: any metric may be missing. A summary file
        gives aggregates only (no per-item values, so it cannot serve for forget quality).
        """
        from t3unlearn.io import load_json

        p = Path(path).expanduser()
        if p.is_dir():
            candidates = [p / EVAL_FILE] + sorted(p.glob("*_EVAL.json")) + [p / SUMMARY_FILE] + sorted(p.glob("*_SUMMARY.json"))
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise T3Error(f"{p} holds no {EVAL_FILE} (or other *_EVAL.json / *_SUMMARY.json); is it a results directory from 't3unlearn eval'?")
            file, directory = found, p
        elif p.is_file():
            file, directory = p, p.parent
        else:
            raise T3Error(f"results file or directory {p} does not exist; give a results directory (written by t3unlearn eval or EvalResults.save) or a TOFU_EVAL.json file.")
        data = load_json(file)
        if not isinstance(data, dict) or not data:
            raise T3Error(f"{file} is not a TOFU results file (expected a JSON object keyed by metric name).")
        if all(isinstance(v, (int, float)) or v is None for v in data.values()):
            metrics = {k: {"agg_value": v} for k, v in data.items()}  # a summary file
        elif all(isinstance(v, dict) for v in data.values()):
            metrics = data
        else:
            raise T3Error(f"{file} is not in the TOFU_EVAL.json layout (each metric must map to an object with 'agg_value').")
        if not any(isinstance(v, dict) and "agg_value" in v for v in metrics.values()):
            raise T3Error(f"{file} has no metric with an 'agg_value'; it is not a TOFU results file.")
        from t3unlearn.eval.metrics import DEFAULT_REPORT, MIA_METRICS, UTILITY_PARTS

        if not set(metrics) & {*DEFAULT_REPORT, *UTILITY_PARTS, *MIA_METRICS}:
            raise T3Error(f"{file} holds none of TOFU's metrics (e.g. {', '.join(DEFAULT_REPORT[:3])}); it is not a "
                          "TOFU results file: give one written by 't3unlearn eval' or the reference framework.")
        info = {}
        if (directory / INFO_FILE).is_file() and file.name != INFO_FILE:
            loaded = load_json(directory / INFO_FILE)
            info = loaded if isinstance(loaded, dict) else {}
        return cls(metrics=metrics, info=info, path=directory if p.is_dir() else file)


def load_results(path: str | Path) -> EvalResults:
    """Shorthand for :meth:`EvalResults.load`."""
    return EvalResults.load(path)


def as_results(obj: Any) -> EvalResults | None:
    """Turn a results object, a path or a TOFU_EVAL-layout dict into :class:`EvalResults` (None stays None)."""
    if obj is None or isinstance(obj, EvalResults):
        return obj
    if isinstance(obj, dict):
        return EvalResults(metrics=obj)
    return EvalResults.load(obj)


def _jsonable(obj: Any) -> Any:
    """NumPy scalars -> Python numbers, NaN/inf -> None, recursively."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    try:
        import numpy as np

        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.ndarray):
            return _jsonable(obj.tolist())
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, float) or hasattr(obj, "__float__"):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj
