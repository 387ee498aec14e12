"""The three variants of docs/notes/2026-12-07-how-flat-t3-answers.md, run through the ``t3unlearn`` CLI.

Each variant changes one thing in the package for this process only, then runs the command given after ``--``:

- ``word-greedy``: greedy decoding of a T3 head with a word-piece table first decides "continue this word or not"
  by the summed mass of the word pieces, then takes the most likely token of the chosen group (teacher-forced
  scores are unchanged).
- ``template-labels``: while the head trains, a forget token that the retain answers' trigram statistics predict
  (probability >= ``--template-p`` given the two tokens before it) is labelled retain.
- ``slot``: the tempering strength at each position is multiplied by ``min(1, H / --slot-h0)``, H the base's
  entropy there (over the columns the guidance sees); the tilt is unchanged.

    python benchmarks/flat_answers.py --variant slot --slot-h0 0.005 -- calibrate --head HEAD --forget world:forget10 \\
        --retain world:retain90 --oracle world:retain90 --temperatures 1.5,2,2.5,3,4,6 --seed 0 --out OUT
    python benchmarks/flat_answers.py --variant word-greedy -- probe --model world:full --head HEAD --out OUT
"""

from __future__ import annotations

import argparse
import collections
import sys


def word_greedy() -> None:
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    from t3unlearn.t3.model import T3ForCausalLM

    class WordGreedy(LogitsProcessor):
        def __init__(self, pieces: torch.Tensor):
            self.pieces = pieces.bool()

        def __call__(self, input_ids, scores):
            pieces = self.pieces.to(scores.device)
            continues = scores.float().softmax(-1)[:, pieces].sum(-1, keepdim=True) >= 0.5
            group = torch.where(continues, pieces.unsqueeze(0), ~pieces.unsqueeze(0))
            return scores.masked_fill(~group, float("-inf"))

    generate = T3ForCausalLM.generate

    def patched(self, *args, **kwargs):
        if not kwargs.get("do_sample") and self.guidance.reads_pieces:
            processors = kwargs.pop("logits_processor", None) or LogitsProcessorList()
            processors.append(WordGreedy(self.head.piece_mask()))
            kwargs["logits_processor"] = processors
        return generate(self, *args, **kwargs)

    T3ForCausalLM.generate = patched


def template_labels(p_min: float) -> None:
    import t3unlearn.t3.train as train

    init = train.CachedProvider.__init__

    def patched(self, fs):
        init(self, fs)
        seq, targets = fs.seq.tolist(), fs.targets.tolist()
        contexts, last, p1, p2 = [], None, -1, -2
        for item, token in zip(seq, targets):
            if item != last:
                p1, p2, last = -1, -2, item
            contexts.append((p2, p1, token))
            p2, p1 = p1, token
        tri, bi = collections.Counter(), collections.Counter()
        for item, (a, b, t) in zip(seq, contexts):
            if item >= fs.n_forget:
                tri[(a, b, t)] += 1
                bi[(a, b)] += 1
        labels, shared = self.token_label.clone(), 0
        for k, (item, (a, b, t)) in enumerate(zip(seq, contexts)):
            if item < fs.n_forget and bi[(a, b)] and tri[(a, b, t)] / bi[(a, b)] >= p_min:
                labels[k], shared = 1.0, shared + 1
        print(f"template labels: {shared} of {sum(i < fs.n_forget for i in seq)} forget tokens labelled retain",
              file=sys.stderr)
        self.token_label = labels

    train.CachedProvider.__init__ = patched


def slot(h0: float) -> None:
    import t3unlearn.t3.guidance as guidance

    original = guidance._tempered_and_tilted

    def patched(logp, reading, g, weight, copy):
        if g.temperature == 1.0:
            return original(logp, reading, g, weight, copy)
        entropy = -(logp.exp() * logp).nan_to_num().sum(-1, keepdim=True)
        strength = reading.mass(logp) if g.tempering == "adaptive" else 1.0
        if weight is not None:
            strength = strength * weight.float()
        tempered = logp / (1.0 + (g.temperature - 1.0) * strength * (entropy / h0).clamp(max=1.0))
        if g.scale == 0.0:
            return tempered
        return tempered + (g.scale * (weight.float() if weight is not None else 1.0)) * reading.logsigmoid()

    guidance._tempered_and_tilted = patched


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        raise SystemExit("usage: flat_answers.py --variant V [options] -- T3UNLEARN_ARGS ...")
    split = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", choices=("word-greedy", "template-labels", "slot"), required=True)
    p.add_argument("--template-p", type=float, default=0.5)
    p.add_argument("--slot-h0", type=float, default=0.005)
    args = p.parse_args(argv[:split])
    {"word-greedy": word_greedy, "template-labels": lambda: template_labels(args.template_p),
     "slot": lambda: slot(args.slot_h0)}[args.variant]()
    from t3unlearn.commands.main import main as t3unlearn

    return t3unlearn(argv[split + 1 :])


if __name__ == "__main__":
    raise SystemExit(main())
