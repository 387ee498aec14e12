"""The leakage probes (:mod:`t3unlearn.eval.probe`) run on a model beside the retain (oracle) model.

What ``t3unlearn probe``, ``t3unlearn eval --probes`` and ``t3unlearn compare --probes`` share: the inputs a
benchmark gives the probes (its forget items with their perturbed answers, the vocabulary of its data files,
its judge model), the oracle's result (probed once, then cached under ``cache_home()/probe``, keyed by the
oracle's files, the probe settings, the vocabulary and the judge's files), and the files written
(``PROBES.json``: every value; ``probes.md``: the table).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

PROBE_CACHE_VERSION = 3  # bump when the probes' definitions change: cached oracle results are then recomputed


def forget_rows(source: str, split: str) -> list[dict]:
    """The forget items of ``split`` with their perturbed answers (``SOURCE:SPLIT_perturbed``)."""
    from t3unlearn.data import load_qa

    return load_qa(f"{source}:{split}_perturbed", what="forget set").to_list()


def vocabulary_sources(bench) -> list[Path]:
    """The files whose words are the benchmark's vocabulary (the non-word rate): its tiny models' training files
    and, when it is a directory, its data source."""
    source = Path(bench.data_source())
    return [Path(bench.training_dir())] + ([source] if source.is_dir() else [])


def oracle_probe(oracle: str | Path, name: str, split: str, rows: Sequence[dict], *, vocab: set[str],
                 judge=None, judge_path: str | Path | None = None, device: str | None = None,
                 log: Callable[[str], None] = print, **kw) -> dict[str, Any]:
    """The probes of the retain model at ``oracle`` (named ``name``) on ``rows``: read from the cache when it has
    them, else run once and cached. ``kw``: :func:`t3unlearn.eval.probe.probe`'s settings. The judge model
    (``judge``, else loaded from ``judge_path``) is only needed when the oracle is probed."""
    from t3unlearn.eval.probe import probe
    from t3unlearn.io import cache_home, file_fingerprint, fingerprint, load_json, save_json
    from t3unlearn.lm import load_lm

    settings = {k: v for k, v in kw.items() if k != "progress"}
    key = fingerprint(file_fingerprint(oracle), settings, len(rows), sorted(vocab),
                      file_fingerprint(judge_path) if judge_path else None, PROBE_CACHE_VERSION)
    cache = cache_home() / "probe" / f"{name}-{split}-{key}.json"
    if cache.is_file():
        return load_json(cache)
    log(f"probing the retain model {name} once (cached at {cache})")
    if judge is None and judge_path:
        judge = load_lm(str(judge_path), device=device, name=str(judge_path))
    result = probe(load_lm(str(oracle), device=device, name=name), list(rows), vocab=vocab, judge=judge, **kw)
    save_json(cache, result)
    return result


def save_probes(out: str | Path, results: dict[str, dict], *, benchmark: str, split: str, reference: str | None,
                judge: str | None, vocabulary_words: int) -> str:
    """Write ``out/PROBES.json`` (every value) and ``out/probes.md`` (the table, each model beside
    ``reference``); return the table."""
    from t3unlearn.eval.probe import format_probes
    from t3unlearn.io import atomic_write, save_json

    out = Path(out)
    table = format_probes(results, reference=reference)
    save_json(out / "PROBES.json", {"benchmark": benchmark, "split": split, "reference": reference,
                                     "judge": judge, "vocabulary_words": vocabulary_words, "results": results})
    with atomic_write(out / "probes.md", "w", encoding="utf-8") as fh:
        fh.write(f"# Leakage probes: {benchmark} {split}\n\n{table}\n")
    return table


def probe_with_reference(lm, bench, split: str, out: Path, *, reference: bool = True, judge: str = "auto",
                         device: str | None = None, log=print, **kw) -> str:
    """Probe ``lm`` on ``bench``'s ``split`` (and, with ``reference``, the benchmark's retain model, cached);
    write ``out/PROBES.json`` and ``out/probes.md``; return the table. ``judge``: ``auto`` (the benchmark's
    pretrained checkpoint), ``none``, or a model."""
    from t3unlearn.benchmarks import resolve_model
    from t3unlearn.eval import runner
    from t3unlearn.eval.probe import probe, vocabulary
    from t3unlearn.lm import load_lm

    rows = bench.qa(f"{split}_perturbed", what="forget set").to_list()
    vocab = vocabulary(vocabulary_sources(bench))
    judge_lm, judge_path = None, None
    if judge.strip().lower() != "none":
        judge_path = str(bench.model("pretrained", log=log)) if judge.strip().lower() == "auto" else resolve_model(judge, log=log)
        judge_lm = load_lm(judge_path, device=device, name=judge if judge != "auto" else f"{bench.label}:pretrained")
    results = {lm.name: probe(lm, rows, vocab=vocab, judge=judge_lm, **kw)}
    ref_name = None
    if reference:
        ref_name = runner.retain_split(split)
        results[ref_name] = oracle_probe(bench.model(ref_name, log=log), ref_name, split, rows, vocab=vocab, judge=judge_lm,
                                         judge_path=judge_path, device=device, log=log, **kw)
    return save_probes(out, results, benchmark=bench.label, split=split, reference=ref_name, judge=judge_path,
                       vocabulary_words=len(vocab))


__all__ = ["PROBE_CACHE_VERSION", "forget_rows", "oracle_probe", "probe_with_reference", "save_probes",
           "vocabulary_sources"]
