"""The oracle's membership AUC read off the full model with the forget authors renamed (issue #30; not in the package).

Calibration asks the guided forget answers to be as surprising as never-seen authors' answers (min-k AUC, forget vs
calibration authors, within 0.5 +- 0.075). An exact unlearner does not sit at 0.5 when there are few forget authors:
some authors' facts are rarer than others' (docs/results/comparison.md, "What an exact unlearner scores"). The full
model holds every forget fact under its author's name; asked about an author it never met, it answers from what it
learned of authors in general, as the oracle does. So this scores the forget answers under the full model with each
forget author's name, in the question and in the answer, replaced by a name it never saw (a first name and a surname
of two different calibration authors), and prints that AUC against the calibration authors beside the oracle's, the
pretrained checkpoint's and the full model's own (the data-only figure a calibration could centre its band on).

    python benchmarks/name_swap_membership.py --benchmark world --trainings 0,1,2
    python benchmarks/name_swap_membership.py --benchmark world-s104 --out unseen-worlds
    T3UNLEARN_TOFU_DIR=../shared/data/tofu python benchmarks/name_swap_membership.py --benchmark tofu --trainings 0,1,2 --splits forget10

One torch thread; a minute or two per training on the tiny models.
Measured in docs/notes/2026-12-07-membership-centre-from-renamed-authors.md: it tracks the oracle on the development
world, not on TOFU, and fails on world 104's forget01 (a dead end).
"""

from __future__ import annotations

import argparse

from tofu_perturbations import author_name, rename


def authors(ds, per_author: int = 20) -> list[str]:
    """Each item's author: the world's ``author`` field, else TOFU's blocks of ``per_author`` items."""
    if "author" in ds.column_names:
        return list(ds["author"])
    qs = list(ds["question"])
    names = [author_name(qs[i:i + per_author]) for i in range(0, len(qs), per_author)]
    return [names[i // per_author] for i in range(len(qs))]


def unseen_names(calibration_authors: list[str], n: int) -> list[str]:
    """``n`` names no model met: calibration authors' first names with other calibration authors' surnames."""
    uniq = list(dict.fromkeys(calibration_authors))
    out = []
    for k in range(n):
        first = uniq[k % len(uniq)].split()[0]
        last = uniq[(k + 1) % len(uniq)].split()[-1]
        out.append(f"{first} {last}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--benchmark", default="world", help="world, tofu or world-sN (the world of generator seed N, built "
                    "under --out and its models trained on first use) [world]")
    ap.add_argument("--out", default="unseen-worlds", help="where world-sN lives (shared with unseen_worlds.py)")
    ap.add_argument("--trainings", default="0")
    ap.add_argument("--splits", default="forget01,forget05,forget10")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from t3unlearn.benchmarks import get_benchmark
    from t3unlearn.eval.metrics import mia_auc, min_k_score
    from t3unlearn.eval.runner import retain_split
    from t3unlearn.lm import load_lm

    name = args.benchmark
    if name.startswith("world-s"):
        from pathlib import Path

        from unseen_worlds import world_dir

        Path(args.out).mkdir(parents=True, exist_ok=True)
        name = world_dir(int(name[len("world-s"):]), Path(args.out))
    bench = get_benchmark(name)
    cal = bench.qa("calibration")
    cal_names = authors(cal)
    for t in (int(x) for x in args.trainings.split(",")):
        for split in args.splits.split(","):
            retain = retain_split(split)
            models = bench.models(("pretrained", "full", retain), progress=False, seed=t)
            forget = bench.qa(split)
            names = authors(forget)
            new = dict(zip(dict.fromkeys(names), unseen_names(cal_names, len(set(names)))))
            swapped_q = [rename(q, a, new[a]) for q, a in zip(forget["question"], names)]
            swapped_a = [rename(x, a, new[a]) for x, a in zip(forget["answer"], names)]
            row = []
            for label, path, qs, ans in (("oracle", models[retain], forget["question"], forget["answer"]),
                                         ("pretrained", models["pretrained"], forget["question"], forget["answer"]),
                                         ("full", models["full"], forget["question"], forget["answer"]),
                                         ("full, renamed", models["full"], swapped_q, swapped_a)):
                lm = load_lm(str(path))

                def scores(q, a):
                    return [min_k_score(s.without_eos().logprob) for s in lm.token_scores(lm.encode(list(q), list(a)))]

                row.append(f"{label} {mia_auc(scores(qs, ans), scores(cal['question'], cal['answer'])):.3f}")
            print(f"{args.benchmark} training {t} {split}: forget-vs-calibration min-k AUC: " + ", ".join(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
