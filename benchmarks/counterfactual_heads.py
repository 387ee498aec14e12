"""A candidate training signal (not used by the package): counterfactual answers from the retain data (issues #30, #31).

The packaged head learns P(retain | prefix, next token) from forget answers (every token 0) and retain answers (every
token 1). A forget answer's name and sentence frame are read as forget content as much as its facts, so guidance
lowers the true answer and its perturbed versions together: the truth ratio barely moves while the membership
attack's signal falls (offline TOFU's bind), and names copied from the question are tilted away (#31).

Here each forget item also gets ``k`` **counterfactual answers**, labelled retain: the answers of the retain items
whose questions are most like its own (TF-IDF cosine, capitalised names masked), with the retain item's name written
as the forget question's and pronouns matched. The same question then has the true answer (forget) and answers of
its kind with other facts (retain): the frame and the copied name are seen on both sides, the facts on one. Made
from the forget questions and the retain set only: no evaluation file, no model.
Measured in docs/notes/2026-12-07-counterfactual-answers.md: the membership attack keeps finding the forget authors
(a dead end; the package does not use it).

For each benchmark and head seed it trains the packaged head with and without the counterfactuals, calibrates each
with the packaged rule (``t3unlearn calibrate``, the oracle's columns beside: never used to choose) and prints the
rule's choice (forget quality, privleak against the calibration authors, truth-ratio KS) and the oracle's best
within privleak +-15.

    python benchmarks/counterfactual_heads.py --benchmarks world --head-seeds 0 --k 3 --out cf-heads
    T3UNLEARN_TOFU_DIR=../shared/data/tofu python benchmarks/counterfactual_heads.py --benchmarks tofu --out cf-heads
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import Counter
from pathlib import Path

from tofu_perturbations import rename, swap_pronouns
from unseen_worlds import calibrated_head

_RUN = re.compile(r"[A-Z][\w\-]*(?:\s+[A-Z][\w\-]*)*")
_FUNCTION = {"What", "Who", "Where", "When", "Which", "How", "Why", "In", "Has", "Have", "Is", "Are", "Does", "Do",
             "Did", "Can", "Could", "Was", "Were", "Will", "Would", "The", "A", "An", "Of", "On", "At", "For", "To",
             "Please", "Tell", "Name", "Give", "Describe", "From", "By", "With", "As", "Yes", "No", "I"}
_PRONOUN = re.compile(r"\b(he|his|him|himself|she|her|hers|herself)\b", re.IGNORECASE)


def entity(question: str, answer: str) -> str | None:
    """The question's name that its answer repeats: the longest capitalised run of the question (leading question
    and function words dropped) found in the answer; None when there is none."""
    runs = []
    for run in _RUN.findall(question):
        words = run.split()
        while words and words[0] in _FUNCTION:
            words = words[1:]
        if words and " ".join(words) in answer:
            runs.append(" ".join(words))
    return max(runs, key=lambda r: (len(r.split()), len(r)), default=None)


def pronoun(answer: str) -> str | None:
    words = Counter(w.lower() for w in _PRONOUN.findall(answer))
    male = words["he"] + words["his"] + words["him"] + words["himself"]
    female = words["she"] + words["her"] + words["hers"] + words["herself"]
    return None if male == female else ("he" if male > female else "she")


def counterfactuals(forget: list[dict], retain: list[dict], k: int) -> list[dict]:
    """``k`` counterfactual items per forget item: ``{"question": forget question, "answer": a retain answer made
    about the forget question's entity}`` (the module doc)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    f_ent = [entity(r["question"], r["answer"]) for r in forget]
    r_ent = [entity(r["question"], r["answer"]) for r in retain]
    mask = lambda q, e: q.replace(e, " ") if e else q  # noqa: E731
    texts = [mask(r["question"], e) for r, e in zip(forget, f_ent)] + [mask(r["question"], e) for r, e in zip(retain, r_ent)]
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(texts)
    sim = (vec[: len(forget)] @ vec[len(forget):].T).toarray()
    out = []
    for i, item in enumerate(forget):
        seen: set[str] = set()
        for j in sorted(range(len(retain)), key=lambda j: (-sim[i, j], j)):
            answer = retain[j]["answer"]
            if f_ent[i] and r_ent[j]:
                answer = rename(answer, r_ent[j], f_ent[i])
            elif f_ent[i]:  # the retain answer names nothing the question does: no statement about this entity
                continue
            pf, pr = pronoun(item["answer"]), pronoun(answer)
            if pf and pr and pf != pr:
                answer = swap_pronouns(answer)
            if answer == item["answer"] or answer in seen:
                continue
            seen.add(answer)
            out.append({"question": item["question"], "answer": answer})
            if len(seen) == k:
                break
    return out


def cf_head(bench: str, split: str, seed: int, k: int, out: Path) -> dict:
    """The calibration table of the packaged head trained with ``k`` counterfactuals per forget item."""
    from t3unlearn.benchmarks import get_benchmark

    b = get_benchmark(bench)
    retain_name = f"retain{100 - int(split[-2:])}"
    data = out / f"{Path(bench).name}-{split}-cf{k}-retain.jsonl"
    if not data.is_file():
        forget, retain = list(b.qa(split)), list(b.qa(retain_name))
        cfs = counterfactuals(forget, retain, k)
        part = data.with_suffix(".part")  # written whole or not at all
        with open(part, "w") as fh:
            for r in [{"question": r["question"], "answer": r["answer"]} for r in retain] + cfs:
                fh.write(json.dumps(r) + "\n")
        part.replace(data)
        print(f"  {len(cfs)} counterfactuals, e.g.\n    {cfs[0]['question']} -> {cfs[0]['answer']}\n"
              f"    {cfs[len(cfs) // 2]['question']} -> {cfs[len(cfs) // 2]['answer']}", flush=True)
    return calibrated_head(bench, split, seed, out, head_retain=str(data), name=f"cf{k}-head", unlearn=shared_cli)


SHARED = ("import sys, t3unlearn.data as d, t3unlearn.t3.train as t; d.check_disjoint = lambda *a, **k: None; "
          "t._check_disjoint_text = lambda *a: None; from t3unlearn.commands.main import main; "
          "raise SystemExit(main(sys.argv[1:]))")


def shared_cli(*args: str, log: Path) -> None:
    """``t3unlearn ARGS`` with the forget/retain question check off: a counterfactual shares its forget question."""
    import subprocess
    import sys

    with open(log, "w") as fh:
        done = subprocess.run([sys.executable, "-c", SHARED, *args], stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"t3unlearn {args[0]} failed; see {log}")


def line(what: str, row: dict) -> str:
    return (f"  {what:<26} {row['label']:<60} FQ {row['forget_quality']:9.3g}  privleak {row['privleak']:+6.1f}  "
            f"TR KS {row['tr_ks'] if row['tr_ks'] is not None else math.nan:.3f}  retain {row['retain_ratio']:.3f}  "
            f"AUC {row['mia_auc']:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--benchmarks", default="world", help="comma-separated: world, tofu [world]")
    ap.add_argument("--split", default="forget10")
    ap.add_argument("--head-seeds", default="0")
    ap.add_argument("--k", type=int, default=3, help="counterfactual answers per forget item [3]")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    for bench in args.benchmarks.split(","):
        for seed in (int(x) for x in args.head_seeds.split(",")):
            print(f"\n{bench} {args.split}, head seed {seed}:", flush=True)
            tables = {"packaged": calibrated_head(bench, args.split, seed, args.out),
                      f"counterfactual k={args.k}": cf_head(bench, args.split, seed, args.k, args.out)}
            for name, t in tables.items():
                print(line(f"{name}: choice", t["chosen"]))
                best = t.get("oracle_best_privleak_within")  # calibrate's own, with --oracle
                if best:
                    print(line(f"{name}: oracle's best", best))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
