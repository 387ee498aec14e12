"""The leakage probes in ``t3unlearn compare`` (``--probes``, or ``"eval": {"probes": true}`` in the config).

Every full-evaluation unit (each method's chosen setting, each seed, and the full model; never the sweep's quick
units) runs ``t3unlearn probe``'s default probes on its model and writes ``PROBES.json`` / ``probes.md`` beside its
TOFU results, the oracle's values beside its own; its record keeps the flat values (``record["probes"]``). The
retain (oracle) model is probed once, by the driver, and cached as ``t3unlearn probe`` caches it. The report gets a
table of its own per split: a row per method (mean ± sd over seeds) and the oracle's row. These are not TOFU
metrics: they never enter the TOFU table, the summary, or the selection of a sweep setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from t3unlearn.eval.probe import PROBES
from t3unlearn.experiments.compare.selection import mean_and_stdev, title

# t3unlearn probe's defaults (its --samples and --seed); the generation length and batch are the comparison's eval's
SAMPLES = 5
SEED = 0
# the report's columns: each probe's key-fact leak rate, entity preservation, the non-word rate
COLUMNS = (*(f"{p} leak" for p in PROBES), "entity kept", "non-word rate")
NOTE = ("`t3unlearn probe`'s default probes (docs/eval.md) of each method's evaluated models: the key-fact leak rate "
        "under each probe (lower: less of the forget facts comes back), the question's named entities kept in the "
        "greedy answer, the greedy answers' non-word rate; mean ± sd over seeds, beside the oracle's (probed once). "
        "These are not TOFU metrics and are not used for selection.")


def probe_plan(bench, split: str, retain_model: str, pretrained: str | None, own_model: bool, cfg_eval,
               log: Callable[[str], None], training: dict | None = None) -> dict[str, Any]:
    """What every unit's probes need, resolved at the edge (JSON; it is part of the probed units' cache keys):
    the settings, the vocabulary files, the judge (``pretrained``; else the benchmark's pretrained checkpoint when
    the model to unlearn is the benchmark's own; else none: no judge loss) and the oracle."""
    from t3unlearn.benchmarks import resolve_model
    from t3unlearn.eval.probing import PROBE_CACHE_VERSION, vocabulary_sources
    from t3unlearn.eval.runner import retain_split

    if pretrained:
        judge = str(resolve_model(pretrained, log=log))
    elif own_model:
        judge = str(bench.model("pretrained", log=log, **(training or {})))
    else:
        judge = None
        log("probes: no judge loss (give --pretrained, the checkpoint --model was fine-tuned from, to score the answers with it)")
    settings = {"probes": list(PROBES), "samples": SAMPLES, "seed": SEED,
                "max_new_tokens": cfg_eval.max_new_tokens, "batch_size": cfg_eval.batch_size}
    return {"settings": settings, "source": str(bench.data_source()), "benchmark": bench.label,
            "vocabulary": [str(p) for p in vocabulary_sources(bench)], "judge": judge, "oracle": str(retain_model),
            "oracle_name": retain_split(split), "version": PROBE_CACHE_VERSION}


def _inputs(plan: dict, split: str) -> tuple[list[dict], set[str]]:
    from t3unlearn.eval.probe import vocabulary
    from t3unlearn.eval.probing import forget_rows

    return forget_rows(plan["source"], split), vocabulary(plan["vocabulary"])


def oracle_result(plan: dict, split: str, *, rows=None, vocab=None, judge=None, progress: bool = True,
                  log: Callable[[str], None] = print) -> dict:
    """The oracle's probe result: read from the cache, else probed once and cached (``t3unlearn probe``'s cache)."""
    from t3unlearn.eval.probing import oracle_probe

    if rows is None or vocab is None:
        rows, vocab = _inputs(plan, split)
    return oracle_probe(plan["oracle"], plan["oracle_name"], split, rows, vocab=vocab, judge=judge, judge_path=plan["judge"],
                        log=log, progress=progress, **plan["settings"])


def probe_unit(plan: dict, split: str, lm, out: Path, *, is_oracle: bool = False, progress: bool = True,
               log: Callable[[str], None] = print) -> dict[str, float]:
    """Probe one unit's ``lm`` (``is_oracle``: it is the oracle, whose cached result is its own); write
    ``out/PROBES.json`` and ``out/probes.md`` with the oracle beside it; return the flat values."""
    from t3unlearn.eval.probe import metrics, probe
    from t3unlearn.eval.probing import save_probes
    from t3unlearn.lm import load_lm

    rows, vocab = _inputs(plan, split)
    judge = load_lm(plan["judge"], name=plan["judge"]) if plan["judge"] and not is_oracle else None
    oracle = oracle_result(plan, split, rows=rows, vocab=vocab, judge=judge, progress=progress, log=log)
    own = oracle if is_oracle else probe(lm, rows, vocab=vocab, judge=judge, progress=progress, **plan["settings"])
    save_probes(out, {lm.name: own, plan["oracle_name"]: oracle}, benchmark=plan["benchmark"], split=split,
                reference=plan["oracle_name"], judge=plan["judge"], vocabulary_words=len(vocab))
    return metrics(own)


def probe_report(rows: Sequence[dict], records: dict[str, list[dict]], oracle: dict, plan: dict) -> dict[str, Any]:
    """The report's probe table as data: one row per TOFU-table row whose records have probes (mean, sd over
    seeds; the Retrain row is the oracle's, so it is left out), and the oracle's row."""
    from t3unlearn.eval.probe import metrics

    out_rows = []
    for row in rows:
        recs = [r for r in records.get(row["method"], []) if r.get("probes")]
        if row["method"] == "retrain" or not recs:
            continue
        labels = list(dict.fromkeys(k for r in recs for k in r["probes"]))
        out_rows.append({"method": row["method"], "title": row["title"], "seeds": [r["seed"] for r in recs],
                         "values": {k: mean_and_stdev([r["probes"].get(k) for r in recs]) for k in labels}})
    return {"columns": list(COLUMNS), "rows": out_rows, "settings": plan["settings"], "judge": plan["judge"],
            "oracle": {"name": plan["oracle_name"], "model": plan["oracle"], "values": metrics(oracle)}, "note": NOTE}


def _cell(pair) -> str:
    mu, sd = pair if isinstance(pair, (list, tuple)) else (pair, None)
    if mu is None or mu != mu:
        return "n/a"
    return f"{mu:.3f}" if not sd else f"{mu:.3f} ± {sd:.3f}"


def probe_markdown(report: dict) -> str:
    """The "Leakage probes" table of one split, with its note."""
    from t3unlearn.eval.report import table

    cols = report["columns"]
    body = [[r["title"], str(len(r["seeds"])), *(_cell(r["values"].get(c)) for c in cols)] for r in report["rows"]]
    oracle = report["oracle"]
    body.append([f"{title('retrain')}: {oracle['name']}", "1", *(_cell(oracle["values"].get(c)) for c in cols)])
    return "\n".join(["#### Leakage probes", "", report["note"], "",
                      table(["method", "seeds", *cols], body, "ll" + "r" * len(cols))])


__all__ = ["COLUMNS", "oracle_result", "probe_markdown", "probe_plan", "probe_report", "probe_unit"]
