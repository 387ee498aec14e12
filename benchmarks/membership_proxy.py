"""Can the oracle's membership AUC be told from the data alone? A probe for issue #30 (not used by the package).

Calibration asks the guided model's forget answers to be as surprising as never-seen authors' (min-k membership
AUC, forget vs calibration authors, within 0.5 +- 0.075). With few forget authors an exact unlearner does not sit at
0.5: some authors' facts are simply rarer than others' (docs/results/comparison.md, "What an exact unlearner
scores"; the oracle's AUC ranges 0.16-0.71 over the worlds' forget01 and forget05). A model that never saw either
group but learned from the same retain data as the oracle would share that bias. This script fits the cheapest
such model -- an interpolated word trigram over the retain answers, with a copy term for the question's words --
and prints its forget-vs-calibration min-k AUC, the figure a calibration could centre its band on.

    python benchmarks/membership_proxy.py --worlds 0,101,102,103,104,105 --splits forget01,forget05,forget10 --out proxy
    T3UNLEARN_TOFU_DIR=../shared/data/tofu python benchmarks/membership_proxy.py --worlds tofu --out proxy

No model, no torch; a world other than 0 is built under OUT (seconds). Measured in
docs/notes/2026-12-07-counterfactual-answers.md: the proxy barely tracks the oracle (a dead end).
"""

from __future__ import annotations

import argparse
import math
import re
from collections import Counter
from pathlib import Path

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class Trigram:
    """Interpolated (Jelinek-Mercer) word trigram with add-one unigrams and a copy term for the question's words."""

    def __init__(self, texts, lambdas=(0.6, 0.3, 0.1), copy: float = 0.2):
        self.l3, self.l2, self.l1 = lambdas
        self.copy = copy
        self.uni, self.bi, self.tri = Counter(), Counter(), Counter()
        self.ctx1, self.ctx2 = Counter(), Counter()
        for t in texts:
            w = ["<s>", "<s>"] + words(t) + ["</s>"]
            for i in range(2, len(w)):
                self.uni[w[i]] += 1
                self.bi[(w[i - 1], w[i])] += 1
                self.ctx1[w[i - 1]] += 1
                self.tri[(w[i - 2], w[i - 1], w[i])] += 1
                self.ctx2[(w[i - 2], w[i - 1])] += 1
        self.total = sum(self.uni.values())
        self.vocab = len(self.uni) + 1

    def logprobs(self, question: str, answer: str) -> list[float]:
        q = Counter(words(question))
        qn = sum(q.values()) or 1
        w = ["<s>", "<s>"] + words(answer)
        out = []
        for i in range(2, len(w)):
            a, b, c = w[i - 2], w[i - 1], w[i]
            p1 = (self.uni[c] + 1) / (self.total + self.vocab)
            p2 = self.bi[(b, c)] / self.ctx1[b] if self.ctx1[b] else p1
            p3 = self.tri[(a, b, c)] / self.ctx2[(a, b)] if self.ctx2[(a, b)] else p2
            p = self.l3 * p3 + self.l2 * p2 + self.l1 * p1
            out.append(math.log((1 - self.copy) * p + self.copy * q[c] / qn))
        return out


def proxy_auc(source: str, split: str, calibration: str, retain_source: str) -> float:
    from t3unlearn.data import load_qa
    from t3unlearn.eval.metrics import mia_auc, min_k_score

    retain = load_qa(f"{retain_source}:retain{100 - int(split[-2:])}")
    lm = Trigram(list(retain["answer"]))

    def scores(ds):
        return [min_k_score(lm.logprobs(q, a)) for q, a in zip(ds["question"], ds["answer"])]

    return mia_auc(scores(load_qa(f"{source}:{split}")), scores(load_qa(calibration)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worlds", default="0", help="comma-separated: world generator seeds (0: the default world) or tofu [0]")
    ap.add_argument("--splits", default="forget01,forget05,forget10")
    ap.add_argument("--out", type=Path, default=Path("proxy"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.worlds.split(","):
        if name == "tofu":
            from t3unlearn.benchmarks import get_benchmark

            b = get_benchmark("tofu")
            source, calibration = b.data_source(), f"{b.training_dir()}:calibration"
            retain_source = str(b.training_dir())  # the retain authors the tiny models (and their oracle) trained on
        else:
            from t3unlearn.benchmarks import resolve_data
            from t3unlearn.world import build_world

            if int(name) == 0:
                source = resolve_data("world:forget10").rsplit(":", 1)[0]
            else:
                path = args.out.resolve() / f"world-s{name}"
                if not (path / "world.json").is_file():
                    build_world(path, "default", seed=int(name))
                source = str(path)
            calibration, retain_source = f"{source}:calibration", source
        for split in args.splits.split(","):
            print(f"{name:>5} {split}: proxy forget-vs-calibration min-k AUC {proxy_auc(source, split, calibration, retain_source):.3f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
