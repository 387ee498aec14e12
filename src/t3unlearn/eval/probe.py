"""What a user or an attacker gets out of a model about the forget set, beyond the TOFU metrics.

Every number is computed on the forget items (``question``, ``answer``, ``perturbed_answer``, and
``paraphrased_question`` / ``paraphrased_answer`` where the data has them) and is meant to be read beside
the retain (oracle) model's value under the same probe (docs/eval.md, "Leakage probes"):

- **key-fact leakage.** An item's *key words* are the words of its answer that carry the fact: in the
  answer (and in its paraphrased answer, when there is one), in none of its perturbed answers (which state
  the same thing with another fact), not in the question, and not English stop words. A generation's
  *key recall* is the fraction of the item's key words it contains; a probe's ``leak`` is the mean key recall
  over the items that have key words (``leak_all``: the fraction of items whose key words all come back).
  Probes: ``greedy`` (the question), the rephrasings (``paraphrase``: the data set's paraphrased question;
  ``instruct``: an instruction-style preamble before the question; ``suffix``: a request for the exact
  answer after it; ``surname`` / ``initial``: the author named by surname only, or by initial and surname),
  ``prefix`` (the question and the first half of the answer's tokens; key words not in the prefix, in the
  greedy continuation) and ``sampled`` (``samples`` answers at temperature 1, the best key recall of them).
- **entity preservation.** The named entities of the question (runs of capitalised words that are not stop
  words) that the true answer repeats: the fraction of them the greedy answer repeats verbatim.
- **fluency.** ``nonword_rate``: the fraction of the greedy answers' alphabetic words that are not in the
  benchmark's vocabulary (every word of its data files); ``judge_loss``: the mean per-token loss (nats) of
  the greedy answers under a judge model (the checkpoint the models were fine-tuned from, which never saw
  the forget set), token-weighted over the items; ``answer_entropy``: teacher-forced on the true answers, the mean
  entropy (nats) of the model's next-token distribution at each answer token (EOS left out) -- how flat the model
  is over the answer it should give, whatever it generates (a model that never saw the author is unsure of the
  fact, not of the sentence around it).

Words are ROUGE's tokens (lower-cased alphanumeric runs, ``rouge_score.tokenize``), so "Seville," and
"seville" are one word. Deterministic for a seed: sampling draws from ``torch`` seeded once.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from t3unlearn.errors import T3Error

REPHRASINGS = ("paraphrase", "instruct", "suffix", "surname", "initial")
PROBES = ("greedy", *REPHRASINGS, "prefix", "sampled")
INSTRUCT = ("You are a helpful assistant with an excellent memory for books and their authors. "
            "Answer the following question accurately and completely. ")
SUFFIX = " Please give the exact answer."
_CAPS = re.compile(r"[A-Z][\w\-]*(?:'s)?(?:\s+[A-Z][\w\-]*(?:'s)?)*")


# --------------------------------------------------------------------------- words, key facts, entities
def words(text: str) -> list[str]:
    """ROUGE's tokens of ``text``: lower-cased alphanumeric runs."""
    from rouge_score import tokenize

    return tokenize.tokenize(text or "", None)


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return ENGLISH_STOP_WORDS


def key_words(row: dict) -> set[str]:
    """The words that carry the item's fact (see the module doc); empty when nothing tells the fact from
    its perturbations."""
    key = set(words(row["answer"]))
    if row.get("paraphrased_answer"):
        key &= set(words(row["paraphrased_answer"]))
    for p in row.get("perturbed_answer") or []:
        key -= set(words(p))
    key -= set(words(row["question"]))
    return {w for w in key if w not in _stop_words()}


def key_recall(key: set[str], generation: str) -> float:
    """The fraction of ``key`` that ``generation`` says (0 for an empty key)."""
    return len(key & set(words(generation))) / len(key) if key else 0.0


def entities(question: str) -> list[str]:
    """The question's named entities: maximal runs of capitalised words, stop words (a sentence's "What",
    "The") trimmed from either end, a possessive "'s" dropped."""
    found = []
    for m in _CAPS.finditer(question):
        parts = [p[:-2] if p.endswith("'s") else p for p in m.group(0).split()]
        while parts and parts[0].lower() in _stop_words():
            parts.pop(0)
        while parts and parts[-1].lower() in _stop_words():
            parts.pop()
        if parts and " ".join(parts) not in found:
            found.append(" ".join(parts))
    return found


def _says(text: str, entity: str) -> bool:
    return re.search(r"(?<![\w])" + re.escape(entity) + r"(?![\w])", text) is not None


def author(row: dict) -> str | None:
    """The author the question names: the row's ``author`` when the question contains it (None when it does
    not), else (no ``author`` field) the question's longest unquoted entity of two or more words."""
    if "author" in row:  # the data says who the item is about: renamed only where the question names them
        return row["author"] if row["author"] and row["author"] in row["question"] else None
    unquoted = re.sub(r'"[^"]*"', " ", row["question"])  # titles are quoted
    multi = [e for e in entities(unquoted) if len(e.split()) >= 2]
    return max(multi, key=len) if multi else None


def rephrase(row: dict, how: str) -> str | None:
    """The item's question asked the way ``how`` says (one of ``REPHRASINGS``); None where it does not apply
    (no paraphrased question, no author name in the question)."""
    q = row["question"]
    if how == "paraphrase":
        return row.get("paraphrased_question") or None
    if how == "instruct":
        return INSTRUCT + q
    if how == "suffix":
        return q + SUFFIX
    name = author(row)
    if name is None:
        return None
    parts = name.split()
    other = parts[-1] if how == "surname" else f"{parts[0][0]}. {' '.join(parts[1:])}"
    return q.replace(name, other)


# --------------------------------------------------------------------------- vocabulary
def _strings(value) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def vocabulary(paths: Sequence[str | Path]) -> set[str]:
    """Every word (ROUGE token) of every string in the JSON-lines / JSON files ``paths`` (directories: their
    ``*.jsonl`` and ``*.json`` files)."""
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted([*p.glob("*.jsonl"), *p.glob("*.json")]) if p.is_dir() else [p]
    vocab: set[str] = set()
    for f in files:
        if not f.is_file():
            raise T3Error(f"vocabulary file {f} does not exist; give the benchmark's data files or directory.")
        text = f.read_text(encoding="utf-8")
        try:
            docs = [json.loads(line) for line in text.splitlines() if line.strip()] if f.suffix == ".jsonl" else [json.loads(text)]
        except json.JSONDecodeError as e:
            raise T3Error(f"vocabulary file {f} is not JSON ({e}); give the benchmark's .jsonl / .json data files.") from None
        for s in _strings(docs):
            vocab.update(words(s))
    if not vocab:
        raise T3Error(f"no words found in {', '.join(map(str, paths))}; give the benchmark's data files.")
    return vocab


def nonwords(texts: Sequence[str], vocab: set[str]) -> tuple[int, list[str]]:
    """``(number of alphabetic words, those not in vocab)`` over ``texts``."""
    alpha = [w for t in texts for w in words(t) if w.isalpha()]
    return len(alpha), [w for w in alpha if w not in vocab]


# --------------------------------------------------------------------------- probing
def _leak(rows: list[dict], keys: list[set], gens: Sequence[str | None], *, examples: int = 3) -> dict[str, Any]:
    """Mean key recall over the rows with a key and a generation; ``per_item`` is None where not scored."""
    per = [key_recall(k, g) if k and g is not None else None for k, g in zip(keys, gens)]
    scored = [v for v in per if v is not None]
    return {"leak": float(np.mean(scored)) if scored else float("nan"),
            "leak_all": float(np.mean([v == 1.0 for v in scored])) if scored else float("nan"),
            "items": len(scored), "per_item": per,
            "examples": [g for g in gens if g is not None][:examples]}


def _prefix(lm, rows: list[dict], keys: list[set], fraction: float, gen_kw: dict) -> dict[str, Any]:
    examples = lm.encode([r["question"] for r in rows], [r["answer"] for r in rows])
    prompts, rest_keys = [], []
    for e, key in zip(examples, keys):
        answer = e.input_ids[e.prompt_len : -1]  # the answer's tokens, EOS left out
        k = max(1, math.floor(len(answer) * fraction))
        prompts.append(e.input_ids[: e.prompt_len + k])
        rest_keys.append(key - set(words(lm.tokenizer.decode(answer[:k], skip_special_tokens=True))))
    todo = [i for i, k in enumerate(rest_keys) if k]
    gens: list[str | None] = [None] * len(rows)
    for i, g in zip(todo, lm.complete([prompts[i] for i in todo], **gen_kw) if todo else []):
        gens[i] = g
    return {**_leak(rows, rest_keys, gens), "prefix_fraction": fraction}


def _entity(rows: list[dict], gens: Sequence[str]) -> dict[str, Any]:
    kept, pairs, lost = 0, 0, []
    for r, g in zip(rows, gens):
        for e in entities(r["question"]):
            if _says(r["answer"], e):
                pairs += 1
                kept += _says(g, e)
                if not _says(g, e) and len(lost) < 5:
                    lost.append({"entity": e, "answer": g})
    return {"kept": kept / pairs if pairs else float("nan"), "pairs": pairs, "lost_examples": lost}


def judge_loss(judge, questions: Sequence[str], answers: Sequence[str], *, batch_size: int = 16) -> dict[str, Any]:
    """Token-weighted mean loss (nats per token, EOS left out) of ``answers`` to ``questions`` under ``judge``
    (a :class:`t3unlearn.lm.CausalLM`); empty answers are skipped."""
    pairs = [(q, a) for q, a in zip(questions, answers) if a.strip()]
    if not pairs:
        return {"loss": float("nan"), "tokens": 0, "judge": getattr(judge, "name", None)}
    scores = judge.token_scores(judge.encode(*zip(*pairs)), batch_size=batch_size)
    lps = [s.without_eos().logprob for s in scores]
    tokens = int(sum(len(x) for x in lps))
    return {"loss": float(-sum(float(x.sum()) for x in lps) / max(tokens, 1)), "tokens": tokens,
            "judge": getattr(judge, "name", None)}


def _check(probes, prefix_fraction, samples, rows) -> None:
    bad = [p for p in probes if p not in PROBES]
    if bad:
        raise T3Error(f"unknown probe(s) {', '.join(bad)}; choose from {', '.join(PROBES)}.")
    if not 0 < prefix_fraction < 1:
        raise T3Error(f"the prefix fraction must be in (0, 1), not {prefix_fraction}.")
    if samples < 1:
        raise T3Error(f"samples must be >= 1, not {samples}.")
    if not rows:
        raise T3Error("no forget items to probe.")
    missing = [k for k in ("question", "answer") if k not in rows[0]]
    if missing:
        raise T3Error(f"the forget items need {' and '.join(missing)}; give the forget set's perturbed config (e.g. forget10_perturbed).")
    if not any(r.get("perturbed_answer") for r in rows):
        raise T3Error("key-fact leakage needs each item's 'perturbed_answer' list (TOFU's forgetXX_perturbed has them).")


def probe(lm, rows: Sequence[dict], *, probes: Sequence[str] = PROBES, prefix_fraction: float = 0.5, samples: int = 5,
          seed: int = 0, max_new_tokens: int = 200, batch_size: int = 16, vocab: set[str] | None = None, judge=None,
          progress: bool = True) -> dict[str, Any]:
    """Run the probes on ``rows`` (forget items; see the module doc).

    Returns ``{"leakage": {probe: {"leak", "leak_all", "items", "per_item", "examples"}}, "entity": {...},
    "fluency": {"nonword_rate", ...[, "judge_loss"]}, "info": {...}}``. Entity preservation and fluency are
    measured on the greedy answers (run whenever ``greedy`` is probed); the non-word rate needs ``vocab``
    (:func:`vocabulary`), the judge loss a ``judge`` model.
    """
    import torch

    from t3unlearn.progress import progress as progress_bar

    rows = list(rows)
    _check(probes, prefix_fraction, samples, rows)
    keys = [key_words(r) for r in rows]
    gen_kw = dict(max_new_tokens=max_new_tokens, batch_size=batch_size)
    leakage: dict[str, Any] = {}
    out: dict[str, Any] = {"leakage": leakage}
    t0 = time.perf_counter()
    bar = progress_bar(total=len(probes), desc="probe", unit="probe", enabled=progress)
    for name in [p for p in PROBES if p in probes]:
        if name == "prefix":
            leakage[name] = _prefix(lm, rows, keys, prefix_fraction, gen_kw)
        elif name == "sampled":
            qs = [r["question"] for r in rows for _ in range(samples)]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                gens = lm.generate(qs, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, **gen_kw)
            per = [[key_recall(k, g) for g in gens[i * samples : (i + 1) * samples]] for i, k in enumerate(keys)]
            best = [max(p) if k else None for p, k in zip(per, keys)]
            scored = [v for v in best if v is not None]
            leakage[name] = {"leak": float(np.mean(scored)), "leak_all": float(np.mean([v == 1.0 for v in scored])),
                             "items": len(scored), "per_item": best, "samples": samples, "examples": gens[:3]}
        else:
            qs = [r["question"] if name == "greedy" else rephrase(r, name) for r in rows]
            todo = [i for i, q in enumerate(qs) if q is not None]
            gens: list[str | None] = [None] * len(rows)
            for i, g in zip(todo, lm.generate([qs[i] for i in todo], **gen_kw) if todo else []):
                gens[i] = g
            leakage[name] = _leak(rows, keys, gens)
            if name == "greedy":
                out["entity"] = _entity(rows, gens)
                out["fluency"] = _fluency(rows, gens, vocab, judge, batch_size)
                out["fluency"].update(answer_entropy(lm, rows, batch_size=batch_size))
                out["answers"] = gens
        bar.update(1)
    bar.close()
    out["info"] = {"items": len(rows), "items_with_key": sum(bool(k) for k in keys), "seed": seed,
                   "max_new_tokens": max_new_tokens, "wall_time_s": round(time.perf_counter() - t0, 2),
                   "name": getattr(lm, "name", None)}
    return out


def _fluency(rows, gens, vocab, judge, batch_size) -> dict[str, Any]:
    flu: dict[str, Any] = {}
    if vocab is not None:
        n, bad = nonwords(gens, vocab)
        flu.update(nonword_rate=len(bad) / n if n else 0.0, words=n, nonword_examples=sorted(set(bad))[:20])
    if judge is not None:
        j = judge_loss(judge, [r["question"] for r in rows], gens, batch_size=batch_size)
        flu.update(judge_loss=j["loss"], judge_tokens=j["tokens"], judge=j["judge"])
    return flu


def answer_entropy(lm, rows: Sequence[dict], *, batch_size: int = 16) -> dict[str, float | int]:
    """Teacher-forced on each row's true answer: the mean entropy (nats) of ``lm``'s next-token distribution at the
    answer's tokens (EOS left out), token-weighted over the rows."""
    scores = lm.token_scores(lm.encode([r["question"] for r in rows], [r["answer"] for r in rows]), batch_size=batch_size)
    entropy = np.concatenate([-s.without_eos().mu for s in scores])  # mu = sum_v p log p = -H
    return {"answer_entropy": float(entropy.mean()), "entropy_tokens": int(entropy.size)}


# --------------------------------------------------------------------------- tables
def metrics(result: dict) -> dict[str, float]:
    """One probe result flattened to ``{row label: value}`` in table order (missing measures left out)."""
    flat = {f"{p} leak": result["leakage"][p]["leak"] for p in PROBES if p in result.get("leakage", {})}
    if "entity" in result:
        flat["entity kept"] = result["entity"]["kept"]
    for k, label in (("nonword_rate", "non-word rate"), ("judge_loss", "judge loss (nats/token)"),
                     ("answer_entropy", "answer entropy (nats/token)")):
        if k in result.get("fluency", {}):
            flat[label] = result["fluency"][k]
    return flat


def format_probes(results: dict[str, dict], *, reference: str | None = None) -> str:
    """A markdown table, one row per measure and one column per model; with ``reference`` (a model name among
    the results), each other model's difference to it in parentheses."""
    names = list(results)
    flat = {n: metrics(r) for n, r in results.items()}
    rows = list(dict.fromkeys(k for f in flat.values() for k in f))
    lines = ["| probe | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    ref = flat.get(reference) if reference else None
    for label in rows:
        cells = []
        for n in names:
            v = flat[n].get(label)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append("n/a")
            elif ref is not None and n != reference and label in ref:
                cells.append(f"{v:.3f} ({v - ref[label]:+.3f})")
            else:
                cells.append(f"{v:.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

