"""An experiment, not a package feature: train the T3 head on reworded questions too (issue #31).

The head is trained on the hidden states of the forget (and retain) questions as written; a reworded question
gives states it reads as less forget-like, and the fact comes back (docs/notes/2026-12-06-entity-preserving-guidance.md).
This script adds, for every forget *and* retain training item, the same answer to reworded forms of its own
question — wordings chosen to differ from the probes' (``t3unlearn probe``'s instruct / suffix / surname / initial
forms and the data set's paraphrases stay held out):

- ``Here is a question about a writer. {q}``;
- ``Tell me this: {q}``;
- the author by first name only (where the question names the author; dropped where a forget and a retain
  author share the first name and the question).

Then it trains the head as the demo does (same seed and defaults), calibrates T and s with the demo's
oracle-free rule on the *unaugmented* sets, and saves it:

    python benchmarks/reworded_training.py --seed 0 --out t3-runs/reworded-s0
    t3unlearn probe --model world:full --head t3-runs/reworded-s0/t3-head --name reworded-s0 --out t3-runs/probe-reworded-s0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from t3unlearn.benchmarks import get_benchmark
from t3unlearn.commands.demo import _calibrate, _Clock
from t3unlearn.eval.probe import author
from t3unlearn.lm import load_model, load_tokenizer
from t3unlearn.t3 import unlearn

FORMS = ("Here is a question about a writer. {q}", "Tell me this: {q}")


def reworded(ds):
    """``ds`` plus, per row, its question in each of FORMS and with the author by first name (same answer)."""
    from datasets import Dataset

    rows = ds.to_list()
    extra = []
    for r in rows:
        for form in FORMS:
            extra.append({**r, "question": form.format(q=r["question"])})
        name = author(r)
        if name is not None and len(name.split()) > 1:
            extra.append({**r, "question": r["question"].replace(name, name.split()[0])})
    return Dataset.from_list(rows + extra)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    bench = get_benchmark("default")
    models = bench.models(("full", "retain90"))
    tok = load_tokenizer(str(models["full"]))
    base = load_model(str(models["full"]))
    forget, retain = bench.qa("forget10"), bench.qa("retain90")
    aug_f, aug_r = reworded(forget), reworded(retain)
    # a first name alone can name a forget and a retain author alike: such questions are neither's
    both = set(aug_f["question"]) & set(aug_r["question"])
    aug_f = aug_f.filter(lambda r: r["question"] not in both)
    aug_r = aug_r.filter(lambda r: r["question"] not in both)
    print(f"training on {len(aug_f)} forget and {len(aug_r)} retain items (with rewordings)", flush=True)
    result = unlearn(base, tok, aug_f, aug_r, seed=args.seed, progress=True)
    _calibrate(result.model, tok, forget, retain, bench, "forget10", _Clock())
    out = Path(args.out) / "t3-head"
    result.model.save_pretrained(out)
    print(f"saved to {out}: {result.model.guidance}")
    q = [forget[0]["question"], forget[len(forget) // 2 + 3]["question"]]
    from t3unlearn.lm import CausalLM

    for question, answer in zip(q, CausalLM(result.model.eval(), tok).generate(q, max_new_tokens=60)):
        print(f"{question}\n  -> {answer}")


if __name__ == "__main__":
    main()
