"""Evaluate any model on TOFU (or the embedded world): every metric, each answer scored once.

:func:`evaluate` takes a :class:`t3unlearn.lm.CausalLM` -- a base model, a T3 model, a
fine-tuned baseline, all the same to it -- and

1. loads ``forgetXX_perturbed``, ``retain_perturbed``, ``real_authors_perturbed``,
   ``world_facts_perturbed``, ``forgetXX`` and ``holdoutXX``;
2. collects every distinct (question, answer) text pair any metric needs and scores them all
   in one teacher-forced pass (length-sorted batches); a pair shared by several metrics (the
   forget ``answer`` feeds Q_A_Prob, extraction strength, exact memorization and the MIA
   attacks) is scored once;
3. generates one greedy answer per distinct question (left-padded, length-sorted batches that
   stop once every row has emitted EOS) for ROUGE;
4. computes every metric of :mod:`t3unlearn.eval.metrics` into the reference framework's
   ``TOFU_EVAL.json`` layout (:class:`t3unlearn.eval.results.EvalResults`).

Forget quality and privleak need the retain (oracle) model's results on the same split:
pass ``retain_results`` (results, a directory or a TOFU_EVAL.json -- the reference
framework's published ones work), or apply one later with :func:`apply_reference`.
:meth:`t3unlearn.benchmarks.Benchmark.evaluate` does that with the benchmark's own retain model.
"""

from __future__ import annotations

import copy
import itertools
import platform
import re
import time
from typing import Any, Mapping, Sequence

from t3unlearn.errors import T3Error
from t3unlearn.eval import metrics as M
from t3unlearn.eval.results import EvalResults, as_results

# Bumped whenever a metric's definition changes, so cached results (retain references) are recomputed.
# 2: extraction strength 1/n for a wrong last token, zlib on decoded labels, EM None without tokens,
#    the reference's chat prompt, every EOS id stops generation.
EVAL_VERSION = "2"
_SPLIT_RE = re.compile(r"^forget(\d{2})$")
# Generate at most this many tokens per batch first; continue the unfinished rows together after
# (same greedy answers; one long answer does not hold its whole batch for max_new_tokens steps).
GENERATION_STAGE = 64

# set key -> (metric prefix, correct answer for the truth ratio, truth-ratio aggregation)
_QA_SETS = {
    "forget": ("forget", "paraphrased_answer", "closer_to_1"),
    "retain": ("retain", "paraphrased_answer", "true_better"),
    "ra": ("ra", "answer", "true_better"),
    "wf": ("wf", "answer", "true_better"),
}


# --------------------------------------------------------------------------- splits and data


def split_configs(split: str) -> dict[str, str]:
    """The configs an evaluation of ``split`` (``forgetXX``) reads, by role."""
    m = _SPLIT_RE.match(str(split))
    if not m:
        raise T3Error(f"unknown split {split!r}; use forget01, forget05 or forget10 (forgetXX with two digits).")
    pct = m.group(1)
    return {
        "forget": f"forget{pct}_perturbed",
        "retain": "retain_perturbed",
        "ra": "real_authors_perturbed",
        "wf": "world_facts_perturbed",
        "forget_qa": f"forget{pct}",
        "holdout": f"holdout{pct}",
    }


def retain_split(split: str) -> str:
    """The retain set (and retain model) that goes with a forget split: forget10 -> retain90."""
    split_configs(split)
    return f"retain{100 - int(split[-2:]):02d}"


def load_eval_data(source: str, split: str = "forget10") -> dict[str, Any]:
    """The six data sets of an evaluation, by role (see :func:`split_configs`).

    ``source``: where :func:`t3unlearn.data.load_qa` finds the configs -- a directory of
    ``CONFIG.jsonl`` files (a built world, a local copy of TOFU), ``tofu`` or a hub id.
    """
    from t3unlearn.data import load_qa

    configs = split_configs(split)
    need = {
        "forget": ("question", "answer", "paraphrased_answer", "perturbed_answer"),
        "retain": ("question", "answer", "paraphrased_answer", "perturbed_answer"),
        "ra": ("question", "answer", "perturbed_answer"),
        "wf": ("question", "answer", "perturbed_answer"),
        "forget_qa": ("question", "answer"),
        "holdout": ("question", "answer"),
    }
    return {role: load_qa(f"{source}:{cfg}", require=need[role], what=f"{role} set") for role, cfg in configs.items()}


def _rows(ds) -> list[dict]:
    rows = ds.to_list() if hasattr(ds, "to_list") else list(ds)
    for i, r in enumerate(rows):
        r.setdefault("index", i)
        pert = r.get("perturbed_answer")
        if isinstance(pert, str):
            r["perturbed_answer"] = [pert]
    return rows


# --------------------------------------------------------------------------- scoring


class _Pairs:
    """Distinct (question, answer) texts, each scored once."""

    def __init__(self):
        self.index: dict[tuple[str, str], int] = {}

    def add(self, question: str, answer: str) -> int:
        key = (question, answer)
        if key not in self.index:
            self.index[key] = len(self.index)
        return self.index[key]

    def __len__(self):
        return len(self.index)


def _bar(total: int, desc: str, enabled: bool, unit: str):
    from t3unlearn.progress import progress

    return progress(total=total, desc=desc, unit=unit, enabled=enabled)


def score_pairs(lm, pairs: Sequence[tuple[str, str]], *, batch_size: int = 16, progress: bool = True) -> list:
    """TokenScores of each (question, answer), in order; batches sorted by length, one pass each."""
    examples = lm.encode([q for q, _ in pairs], [a for _, a in pairs])
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    out: list = [None] * len(examples)
    chunk = max(1, batch_size) * 8
    with _bar(len(examples), "score", progress, "ans") as bar:
        for start in range(0, len(order), chunk):
            idx = order[start : start + chunk]
            for i, s in zip(idx, lm.token_scores([examples[i] for i in idx], batch_size=batch_size)):
                out[i] = s
            bar.update(len(idx))
    return out


def truth_ratios(lm, forget, *, batch_size: int = 16, progress: bool = False) -> list[float]:
    """Per item of a perturbed forget set (``question``, ``paraphrased_answer``, ``perturbed_answer``): TOFU's truth
    ratio, teacher-forced as the evaluation computes it (no generation)."""
    rows = _rows(forget)
    pairs = _Pairs()
    for r in rows:
        pairs.add(r["question"], r["paraphrased_answer"])
        for a in r["perturbed_answer"]:
            pairs.add(r["question"], a)
    scored = score_pairs(lm, list(pairs.index), batch_size=batch_size, progress=progress)

    def loss(q: str, a: str) -> float:
        return scored[pairs.index[(q, a)]].avg_loss

    return [M.truth_ratio(loss(r["question"], r["paraphrased_answer"]), [loss(r["question"], a) for a in r["perturbed_answer"]])
            for r in rows]


# --------------------------------------------------------------------------- metrics


def _prob_entry(scores) -> dict:
    loss = scores.avg_loss
    return {"prob": M.prob(loss), "avg_loss": loss}


def _qa_metrics(prefix: str, rows: list[dict], correct_field: str, aggregation: str, score_of, generation_of) -> dict:
    """Q_A_Prob(s), truth ratio and ROUGE of one perturbed set, in the reference layout."""
    out: dict[str, dict] = {}
    ans, para, pert, tr, norm, rouge = {}, {}, {}, {}, {}, {}
    for r in rows:
        idx = str(r["index"])
        s_ans = score_of(r["question"], r["answer"])
        ans[idx] = _prob_entry(s_ans)
        wrong = [_prob_entry(score_of(r["question"], a)) for a in r["perturbed_answer"]]
        pert[idx] = {"prob": [w["prob"] for w in wrong], "avg_loss": [w["avg_loss"] for w in wrong]}
        if correct_field == "paraphrased_answer":
            para[idx] = _prob_entry(score_of(r["question"], r["paraphrased_answer"]))
            correct = para[idx]
        else:
            correct = ans[idx]
            norm[idx] = {"prob": M.normalised_prob(correct["prob"], pert[idx]["prob"])}
        tr[idx] = {"score": M.truth_ratio(correct["avg_loss"], pert[idx]["avg_loss"])}
        gen = generation_of(r["question"])
        rouge[idx] = {**M.rouge_scores(r["answer"], gen), "input": r["question"], "ground_truth": r["answer"], "generation": gen}

    def entry(values: dict, key: str) -> dict:
        return {"agg_value": M.mean(v[key] for v in values.values()), "value_by_index": values}

    trs = [v["score"] for v in tr.values()]
    tr_agg = M.truth_ratio_closer_to_1(trs) if aggregation == "closer_to_1" else M.truth_ratio_true_better(trs)
    tr_name = "forget_truth_ratio" if prefix == "forget" else f"{prefix}_Truth_Ratio"
    if correct_field == "paraphrased_answer":
        out[f"{prefix}_Q_A_Prob"] = entry(ans, "prob")
        out[f"{prefix}_Q_A_PARA_Prob"] = entry(para, "prob")
    else:
        out[f"{prefix}_Q_A_Prob_normalised"] = entry(norm, "prob")
        out[f"{prefix}_Q_A_Prob"] = entry(ans, "prob")
    out[f"{prefix}_Q_A_PERT_Prob"] = {
        "agg_value": M.mean(M.mean(v["prob"]) for v in pert.values()),  # per-item mean, then mean
        "value_by_index": pert,
    }
    out[tr_name] = {"agg_value": tr_agg, "value_by_index": tr}
    out[f"{prefix}_Q_A_ROUGE"] = entry(rouge, "rougeL_recall")
    return out


def _score_entry(values: dict[str, float | None]) -> dict:
    """Per-item scores; an item scored None is kept in the file and left out of the mean (as the reference does)."""
    return {"agg_value": M.mean_of_present(values.values()), "value_by_index": {k: {"score": v} for k, v in values.items()}}


def _mia(forget: dict[str, float], holdout: dict[str, float]) -> dict:
    auc = M.mia_auc(list(forget.values()), list(holdout.values()))
    return {"forget": _score_entry(forget), "holdout": _score_entry(holdout), "auc": auc, "agg_value": auc}


def _memorization_and_mia(forget_rows, holdout_rows, score_of, label_text) -> dict:
    es, em = {}, {}
    attacks = {name: ({}, {}) for name in M.MIA_METRICS}
    for side, rows in ((0, forget_rows), (1, holdout_rows)):
        for r in rows:
            idx = str(r["index"])
            s = score_of(r["question"], r["answer"])
            tokens = s.without_eos()
            attacks["mia_min_k"][side][idx] = M.min_k_score(tokens.logprob)
            attacks["mia_min_k_plus_plus"][side][idx] = M.min_k_plus_plus_score(tokens.logprob, tokens.mu, tokens.var)
            attacks["mia_loss"][side][idx] = M.mia_loss_score(s.avg_loss)
            attacks["mia_zlib"][side][idx] = M.mia_zlib_score(s.avg_loss, label_text(s.labels))
            if side == 0:
                es[idx] = M.extraction_strength(tokens.correct)
                em[idx] = M.exact_memorization(tokens.correct)
    out = {name: _mia(*attacks[name]) for name in M.MIA_METRICS}
    out["extraction_strength"] = _score_entry(es)
    out["exact_memorization"] = _score_entry(em)
    return out


def _ordered(metrics: dict) -> dict:
    order = [
        "forget_quality", "forget_truth_ratio", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "model_utility",
        "privleak", "extraction_strength", "exact_memorization", *M.MIA_METRICS, *M.UTILITY_PARTS,
    ]  # fmt: skip
    out = {k: metrics[k] for k in order if k in metrics}
    out.update({k: v for k, v in sorted(metrics.items()) if k not in out})
    return out


def apply_reference(results: EvalResults, reference=None) -> EvalResults:
    """(Re)compute forget_quality and privleak of ``results`` against a retain model's results.

    ``reference``: :class:`EvalResults`, a results directory / TOFU_EVAL.json path, a
    TOFU_EVAL-layout dict, or None. Missing per-item forget truth ratios (or no reference)
    leave forget_quality null; a missing min-k AUC leaves privleak null.
    """
    ref = as_results(reference)
    own_tr = results.forget_truth_ratios()
    ref_tr = ref.forget_truth_ratios() if ref is not None else None
    fq = M.forget_quality(own_tr, ref_tr) if own_tr and ref_tr else None
    auc = results.mia_min_k_auc()
    ref_auc = ref.mia_min_k_auc() if ref is not None else None
    pl = M.privleak(auc, ref_auc) if auc is not None and ref_auc is not None else None
    results.metrics["forget_quality"] = {"agg_value": fq}
    results.metrics["privleak"] = {"agg_value": pl}
    results.metrics = _ordered(results.metrics)
    info = results.info.setdefault("retain_reference", {})
    info.update(
        {
            "source": None if ref is None else (str(ref.path) if ref.path else ref.info.get("name", "given")),
            "forget_quality_available": fq is not None,
            "privleak_available": pl is not None,
        }
    )
    if ref is not None and ref_tr and own_tr and len(ref_tr) != len(own_tr):
        info["warning"] = f"reference has {len(ref_tr)} forget items, this run {len(own_tr)}: is it the same split?"
    return results


def cross_reference(results: Mapping[Any, EvalResults]) -> list[dict]:
    """Each of ``results`` scored against each other one as its reference: ``{"method", "reference",
    "forget_quality", "privleak", "model_utility_ratio"}`` per ordered pair. Given the oracles of several trainings,
    what an exact unlearner (a retrain that is not the reference) reads. The results themselves are left as they are."""
    pairs = []
    for method, reference in itertools.permutations(results, 2):
        scored = apply_reference(copy.deepcopy(results[method]), results[reference])
        mu, ref_mu = results[method].agg("model_utility"), results[reference].agg("model_utility")
        pairs.append({"method": method, "reference": reference, "forget_quality": scored.agg("forget_quality"),
                      "privleak": scored.agg("privleak"), "model_utility_ratio": mu / ref_mu if mu and ref_mu else None})
    return pairs


def compute_metrics(data: Mapping[str, Any], score_of, generation_of, label_text) -> dict:
    """Every TOFU metric from per-pair scores and generations (no forget quality / privleak yet).

    ``label_text(ids)``: the text of an answer's label token ids, special tokens skipped (zlib attack).
    """
    rows = {role: _rows(ds) for role, ds in data.items()}
    out: dict = {}
    for role, (prefix, correct_field, aggregation) in _QA_SETS.items():
        out.update(_qa_metrics(prefix, rows[role], correct_field, aggregation, score_of, generation_of))
    out.update(_memorization_and_mia(rows["forget_qa"], rows["holdout"], score_of, label_text))
    out["model_utility"] = {"agg_value": M.model_utility([out[name]["agg_value"] for name in M.UTILITY_PARTS])}
    return out


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("t3unlearn", "torch", "transformers", "tokenizers", "datasets", "numpy", "scipy", "scikit-learn", "rouge-score"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def evaluate(
    lm,
    *,
    data: Mapping[str, Any] | None = None,
    source: str | None = None,
    split: str = "forget10",
    benchmark: str | None = None,
    retain_results=None,
    batch_size: int = 16,
    max_new_tokens: int = 200,
    generation_batch_size: int | None = None,
    progress: bool = True,
) -> EvalResults:
    """Evaluate one model (any :class:`~t3unlearn.lm.CausalLM`) on a TOFU split; see the module doc.

    The sets come from ``data`` (role -> data set, as :func:`load_eval_data` returns) or are loaded from
    ``source`` (a directory of configs, ``tofu`` or a hub id). ``benchmark`` is a label recorded in
    ``run_info.json``. Returns :class:`EvalResults`; ``results.save(DIR)`` writes the three results files.
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise T3Error("batch size and max new tokens must be >= 1.")
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    if data is None:
        if source is None:
            raise T3Error("evaluate needs the evaluation sets: pass data= (see load_eval_data) or source= (a directory of configs, or 'tofu').")
        data = load_eval_data(source, split)
    missing = [r for r in split_configs(split) if r not in data]
    if missing:
        raise T3Error(f"evaluation data lacks the {', '.join(missing)} set(s); pass every set load_eval_data(source, split) returns.")
    rows = {role: _rows(ds) for role, ds in data.items()}
    timings["load_data_s"] = time.perf_counter() - t_start

    # 1. every distinct (question, answer) that any metric scores
    pairs = _Pairs()
    for role in _QA_SETS:
        for r in rows[role]:
            pairs.add(r["question"], r["answer"])
            for a in r["perturbed_answer"]:
                pairs.add(r["question"], a)
            if _QA_SETS[role][1] == "paraphrased_answer":
                pairs.add(r["question"], r["paraphrased_answer"])
    for role in ("forget_qa", "holdout"):
        for r in rows[role]:
            pairs.add(r["question"], r["answer"])
    n_requests = sum(
        len(rows[r]) * (1 + (_QA_SETS[r][1] == "paraphrased_answer")) + sum(len(x["perturbed_answer"]) for x in rows[r]) for r in _QA_SETS
    ) + len(rows["forget_qa"]) + len(rows["holdout"])
    t = time.perf_counter()
    scored = score_pairs(lm, list(pairs.index), batch_size=batch_size, progress=progress)
    timings["scoring_s"] = time.perf_counter() - t

    # 2. one generation per distinct question
    questions = list(dict.fromkeys(r["question"] for role in _QA_SETS for r in rows[role]))
    t = time.perf_counter()
    with _bar(len(questions), "generate", progress, "q") as bar:
        generations = lm.generate(
            questions,
            max_new_tokens=max_new_tokens,
            batch_size=generation_batch_size or batch_size,
            progress=bar,
            stage_tokens=GENERATION_STAGE,
        )
    timings["generation_s"] = time.perf_counter() - t
    gen_of = dict(zip(questions, generations))

    # 3. metrics
    t = time.perf_counter()
    metrics = compute_metrics(data, lambda q, a: scored[pairs.index[(q, a)]], gen_of.__getitem__,
                              lambda ids: lm.tokenizer.decode(list(ids), skip_special_tokens=True))
    timings["metrics_s"] = time.perf_counter() - t
    timings["wall_time_s"] = time.perf_counter() - t_start

    info = {
        "name": getattr(lm, "name", None),
        "model": getattr(lm, "name", None),
        "benchmark": benchmark or source,
        "split": split,
        "settings": {
            "batch_size": batch_size,
            "generation_batch_size": generation_batch_size or batch_size,
            "max_new_tokens": max_new_tokens,
            "template": "chat" if lm.formatter.use_chat else "plain",
            "max_length": lm.formatter.max_length,
            "greedy": True,
            "min_k": M.MIN_K,
        },
        "items": {role: len(r) for role, r in rows.items()},
        "scored_answers": len(pairs),
        "score_requests": n_requests,
        "generations": len(questions),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "wall_time_s": round(timings["wall_time_s"], 3),
        "device": str(getattr(lm, "device", "cpu")),
        "packages": package_versions(),
    }
    results = EvalResults(metrics=metrics, info=info)
    return apply_reference(results, retain_results)
