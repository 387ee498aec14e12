"""An experiment, not a package feature: T3 with the tokens the context already holds read as retained.

Greedy T3 answers garble the forget author's name, which the question gives and the oracle copies. This
script patches :class:`~t3unlearn.t3.T3ForCausalLM` so that, at each position, some tokens get the head logit
+inf (no tilt, no share in the adaptive forget mass), then prints a few forget answers and the TOFU metrics of
world forget10 against the retain90 oracle (docs/t3.md, "The author's name"):

- ``--variant token``: every token already in the context (the question, the template, the answer so far);
- ``--variant bigram``: token v only where the pair (current token, v) already occurred in the context, i.e. v
  continues a copied span;
- ``--variant none``: the head as saved (the reference row).

    python benchmarks/copy_exemption.py --head t3-runs/demo/t3-head --variant bigram
"""

from __future__ import annotations

import argparse

import torch

from t3unlearn.benchmarks import get_benchmark
from t3unlearn.eval import evaluate
from t3unlearn.lm import CausalLM, cache_kwarg, load_model, load_tokenizer
from t3unlearn.t3.model import T3ForCausalLM

METRICS = ("forget_quality", "model_utility", "forget_truth_ratio", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "privleak")


def token_seen(ids: torch.Tensor, vocab: int, q: int) -> torch.Tensor:
    """(B, q, V): v occurs among ids[:, :t + 1] (for the last q positions of ``ids``, the whole history)."""
    b, n = ids.shape
    pos = torch.arange(n).expand(b, n)
    first = torch.full((b, vocab), n, dtype=torch.long).scatter_reduce_(1, ids, pos, reduce="amin")
    return (torch.arange(n)[None, :, None] >= first[:, None, :])[:, -q:]


def bigram_seen(ids: torch.Tensor, vocab: int, q: int) -> torch.Tensor:
    """(B, q, V): v followed an earlier occurrence of the current token ids[t] (for the last q positions)."""
    b, n = ids.shape
    same = ids[:, :, None] == ids[:, None, :-1]  # (B, n, n-1): ids[t] == ids[i]
    follower_known = torch.arange(n - 1)[None, :] + 1 <= torch.arange(n)[:, None]  # ids[i+1] is already context
    hit = (same & follower_known[None])[:, -q:]
    out = torch.zeros(b, q, vocab)
    out.scatter_add_(2, ids[:, 1:][:, None, :].expand(b, q, n - 1), hit.float())
    return out > 0


def patch(seen_fn) -> None:
    forward, guided = T3ForCausalLM.forward, T3ForCausalLM.guided_logits

    def patched_forward(self, input_ids=None, attention_mask=None, *args, **kwargs):
        cache = kwargs.get(cache_kwarg()) or kwargs.get("past_key_values") or kwargs.get("cache")
        history = getattr(cache, "copy_history", None) if cache is not None and cache.get_seq_length() > 0 else None
        ids = input_ids if history is None else torch.cat([history, input_ids], 1)
        self._rt["seen"] = seen_fn(ids, self.head.out.weight.shape[0], input_ids.shape[1])
        out = forward(self, input_ids, attention_mask, *args, **kwargs)
        kept = getattr(out, cache_kwarg(), None) or cache
        if kept is not None:
            kept.copy_history = ids
        return out

    def patched_guided(self, base_logits, head_logits, pooled=None):
        seen = self._rt["seen"][:, -head_logits.shape[1]:]
        return guided(self, base_logits, head_logits.float().masked_fill(seen, float("inf")), pooled)

    T3ForCausalLM.forward, T3ForCausalLM.guided_logits = patched_forward, patched_guided


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--head", required=True, help="a T3 head over world:full (e.g. the demo's t3-runs/demo/t3-head)")
    p.add_argument("--variant", choices=("token", "bigram", "none"), default="bigram", help="[bigram]")
    p.add_argument("--no-eval", action="store_true", help="only print the answers")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.variant != "none":
        patch(token_seen if args.variant == "token" else bigram_seen)
    bench = get_benchmark("default")
    models = bench.models(("full", "retain90"))
    base = load_model(str(models["full"]))
    lm = CausalLM(T3ForCausalLM.from_base(base, args.head).eval(), load_tokenizer(str(models["full"])), name=f"t3-{args.variant}")
    forget = bench.qa("forget10")
    for q, a in zip((forget[0]["question"], forget[len(forget) // 2 + 3]["question"]),
                    lm.generate([forget[0]["question"], forget[len(forget) // 2 + 3]["question"]], max_new_tokens=60)):
        print(f"{q}\n  -> {a}")
    if not args.no_eval:
        data = bench.data("forget10")
        res = evaluate(lm, data=data, split="forget10", benchmark="world", retain_results=bench.retain_reference("forget10", data=data),
                       progress=False)
        for k in METRICS:
            print(f"{k:>20}: {res.agg(k):.4g}")


if __name__ == "__main__":
    main()
