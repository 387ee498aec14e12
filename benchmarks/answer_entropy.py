"""How flat is a guided model where an answer is due? Teacher-forced answer entropy on a benchmark.

Prints the mean entropy (nats) of the next-token distribution at the true answers' tokens
(:func:`t3unlearn.eval.probe.answer_entropy`, EOS left out) for:

- the full model and the oracle (the retain model) on the forget items;
- the full model on the never-seen calibration items (an oracle-free stand-in for how unsure a model is about
  an author it never saw);
- a T3 head at each ``--settings`` T:s (the head's other guidance settings as saved, or as given) on the
  forget items and on the calibration items.

It also asks whether fact slots can be found without the oracle: a logistic regression on the full model's
last hidden state, trained on the calibration items to tell positions where the full model is unsure (entropy
above ``--slot-nats``) from the rest, then scored (ROC AUC) on the forget items against the positions where the
oracle is unsure (a diagnostic: the oracle is read only to score it).

    python benchmarks/answer_entropy.py --benchmark world --head HEAD --settings 1:0,1:1.5,2:0.75,2.5:0.75 \\
        --support 0.95 --piece-floor 10 --spelling base
    T3UNLEARN_TOFU_DIR=../shared/data/tofu python benchmarks/answer_entropy.py --benchmark tofu --head HEAD \\
        --settings 1.5:0.9,2.5:0.9 --support 0.95 --piece-floor 10 --spelling base
"""

from __future__ import annotations

import argparse

import numpy as np


def rows_of(spec: str, limit: int | None) -> list[dict]:
    from t3unlearn.benchmarks import resolve_data
    from t3unlearn.data import load_qa

    rows = [dict(r) for r in load_qa(resolve_data(spec))]
    return rows[:limit] if limit else rows


def last_states(lm, rows: list[dict], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The last hidden state before each answer token (EOS left out) and the model's entropy there."""
    import torch

    from t3unlearn.data import collate

    states, entropy = [], []
    for i in range(0, len(rows), batch_size):
        part = rows[i : i + batch_size]
        exs = lm.encode([r["question"] for r in part], [r["answer"] for r in part])
        b = collate(exs, lm.formatter.pad_id)
        with torch.inference_mode():
            out = lm.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
        labels = b["labels"][:, 1:]
        keep = (labels != -100) & (labels != lm.tokenizer.eos_token_id)
        logp = out.logits[:, :-1].float().log_softmax(-1)
        entropy.append((-(logp.exp() * logp).sum(-1))[keep].numpy())
        states.append(out.hidden_states[-1][:, :-1][keep].float().numpy())
    return np.concatenate(states), np.concatenate(entropy)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--benchmark", choices=("world", "tofu"), default="world")
    p.add_argument("--split", default="forget10")
    p.add_argument("--head", help="a T3 head trained on BENCHMARK:full (optional)")
    p.add_argument("--settings", default="", help="comma-separated T:s pairs for the head")
    p.add_argument("--support", type=float, default=None)
    p.add_argument("--piece-floor", type=float, default=None)
    p.add_argument("--spelling", default=None)
    p.add_argument("--limit", type=int, default=None, help="first N items of each set [all]")
    p.add_argument("--slot-nats", type=float, default=1.0, help="a position is a fact slot above this entropy [1.0]")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from t3unlearn.benchmarks import resolve_model
    from t3unlearn.eval.probe import answer_entropy
    from t3unlearn.lm import load_lm

    torch.set_num_threads(args.threads)
    b = args.benchmark
    forget, never_seen = rows_of(f"{b}:{args.split}", args.limit), rows_of(f"{b}:calibration", args.limit)
    retain_name = "retain" + str(100 - int(args.split.removeprefix("forget")))
    full_path = resolve_model(f"{b}:full")
    full, oracle = load_lm(full_path), load_lm(resolve_model(f"{b}:{retain_name}"))
    ent = lambda lm, rows: answer_entropy(lm, rows)["answer_entropy"]  # noqa: E731
    print(f"{b} {args.split}: {len(forget)} forget items, {len(never_seen)} never-seen calibration items; "
          "answer entropy, nats per answer token")
    h_cal, e_cal = last_states(full, never_seen)  # one pass per model and set: the entropies and the slot features
    h_fgt, e_full = last_states(full, forget)
    _, e_orc = last_states(oracle, forget)
    print(f"  full on the forget items                  {e_full.mean():.3f}")
    print(f"  {retain_name} (oracle) on the forget items       {e_orc.mean():.3f}")
    print(f"  full on the never-seen calibration items  {e_cal.mean():.3f}")
    if args.head:
        extra = {k: v for k, v in (("support", args.support), ("piece_floor", args.piece_floor),
                                   ("spelling", args.spelling)) if v is not None}
        t3 = load_lm(full_path, head=args.head, **extra)
        for pair in filter(None, args.settings.split(",")):
            T, s = (float(x) for x in pair.split(":"))
            t3.model.set_guidance(temperature=T, scale=s)
            print(f"  T3 T={T:g} s={s:g}: forget {ent(t3, forget):.3f}, never-seen {ent(t3, never_seen):.3f}")
    slots = e_orc > args.slot_nats
    clf = LogisticRegression(max_iter=2000).fit(h_cal, e_cal > args.slot_nats)
    print(f"fact slots (entropy > {args.slot_nats:g} nats): {np.mean(e_cal > args.slot_nats):.3f} of the never-seen "
          f"items' positions (full), {slots.mean():.3f} of the forget items' (oracle)")
    print(f"  ROC AUC for the oracle's slots on the forget items: a detector trained on the never-seen items "
          f"{roc_auc_score(slots, clf.predict_proba(h_fgt)[:, 1]):.3f}; the full model's own entropy "
          f"{roc_auc_score(slots, e_full):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
