"""Choosing a sweep setting, and aggregating a method's seeds into one table row.

Selection (first seed of each setting), the rule of ``t3unlearn calibrate`` with T3's reference and tolerances: the
setting with the lowest ``selection.metric`` (by default ``forget_reference_tr_ks``: how far the forget truth ratios
are from those of the checkpoint the model was fine-tuned from, which never saw the forget set) among the *feasible*
ones: their ``selection.utility_metric`` (retain ``Q_A_Prob``) is at least ``(1 - utility_tolerance)`` times the full
model's, and their ``selection.mia_metric`` (``forget_calibration_mia``: the min-k
membership AUC between the forget and the never-seen items) is within ``mia_tolerance`` of 0.5. If none is
feasible, the one that misses the two constraints by least (utility shortfall plus AUC excess). The rule never
looks at the retain model's results on the forget set (forget quality, privleak): the config refuses those metrics.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

from t3unlearn.experiments.compare.config import SUMMARY_METRICS, Selection

TITLES = {
    "full": "Full (before unlearning)",
    "t3": "T3",
    "cg": "Classifier guidance (T=1)",
    "uld": "ULD",
    "gradascent": "GradAscent",
    "graddiff": "GradDiff",
    "npo": "NPO",
    "simnpo": "SimNPO",
    "idkdpo": "IdkDPO",
    "rmu": "RMU",
    "retrain": "Retrain (oracle)",
}


def title(method: str) -> str:
    """A method's title in the tables: ours above, else the one it was registered with."""
    from t3unlearn.methods import get, names

    return TITLES.get(method) or (get(method).title if method in names("lm") else method)


def _value(record: dict, key: str) -> float | None:
    v = record["summary"].get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _miss(record: dict, full_utility: float | None, selection: Selection) -> float:
    """How far a record is from feasible (0: feasible): its utility shortfall plus its membership AUC's excess over
    the band; a missing value misses by 1."""
    umetric, mmetric = selection.utility_metric, selection.mia_metric
    floor = None if full_utility is None else full_utility * (1 - selection.utility_tolerance)
    u = _value(record, umetric)
    short = 0.0 if floor is None else (1.0 if u is None else max(0.0, floor - u))
    if mmetric is None:
        return short
    a = _value(record, mmetric)
    return short + (1.0 if a is None else max(0.0, abs(a - 0.5) - selection.mia_tolerance))


def feasible(record: dict, full_utility: float | None, selection: Selection) -> bool:
    """Whether a sweep record meets the selection's constraints (utility and membership band)."""
    return _miss(record, full_utility, selection) == 0


def select_setting(records: Sequence[dict], full_utility: float | None, selection: Selection) -> int:
    """Index of the chosen setting (see the module doc); ``records`` are the first-seed runs, in sweep order."""
    metric, umetric = selection.metric, selection.utility_metric
    miss = [_miss(r, full_utility, selection) for r in records]
    ok = [i for i, r in enumerate(records) if miss[i] == 0 and _value(r, metric) is not None]
    if ok:
        sign = 1 if selection.lower_is_better else -1
        return min(ok, key=lambda i: (sign * _value(records[i], metric), i))
    return min(range(len(records)), key=lambda i: (round(miss[i], 9), -(_value(records[i], umetric) or -1.0), i))


def mean_and_stdev(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the values that are numbers (stdev 0 for one value)."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def aggregate(method: str, setting: str, records: Sequence[dict]) -> dict:
    """One table row: every summary metric and cost as (mean, stdev) over the records (seeds)."""
    row: dict[str, Any] = {"method": method, "title": title(method), "setting": setting,
                           "seeds": [r["seed"] for r in records]}
    for k in SUMMARY_METRICS:
        row[k] = mean_and_stdev([r["summary"].get(k) for r in records])
    row["trainable_params"] = records[0]["cost"].get("trainable_params") if records else None
    row["wall_seconds"] = mean_and_stdev([r["cost"].get("wall_seconds") for r in records])
    row["peak_rss_mb"] = mean_and_stdev([r["cost"].get("peak_rss_mb") for r in records])
    row["note"] = records[0]["cost"].get("note") if records else None
    fqs = [r["summary"].get("forget_quality") for r in records if r["summary"].get("forget_quality") is not None]
    row["fq_range"] = (min(fqs), max(fqs)) if fqs else (None, None)
    return row


__all__ = ["TITLES", "aggregate", "feasible", "mean_and_stdev", "select_setting", "title"]
