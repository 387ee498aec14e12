"""An experiment, not a package feature: T3 with the tokens the context already holds read as retained.

Greedy T3 answers garble the forget author's name, which the question gives and the oracle copies. This
script patches :class:`~t3unlearn.t3.T3ForCausalLM` so that, at each position, some tokens get the head logit
+inf (no tilt, no share in the adaptive forget mass), then prints a few forget answers and the TOFU metrics of
world forget10 against the retain90 oracle (docs/notes/2026-12-04-the-authors-name.md):

- ``--variant token``: every token already in the context (the question, the template, the answer so far) -- now the
  package's ``--copy-floor`` knob (docs/t3.md), which also calibrates;
- ``--variant bigram``: token v only where the pair (current token, v) already occurred in the context, i.e. v
  continues a copied span;
- ``--variant question``: token v only where the pair (current token, v) occurs in the *question* (before the
  template's answer marker): v continues a span copied from the question, e.g. the author's name; the template
  and the answer so far free nothing (2026-12-06, docs/notes/2026-12-06-entity-preserving-guidance.md);
- ``--variant none``: the head as saved (the reference row).

``--probe OUT``: also run ``t3unlearn probe``'s measures (key-fact leakage under every rephrasing, prefix and
sampling; entity preservation; non-word rate; judge loss) beside the retain90 oracle's, written to OUT.
``--temperature`` / ``--scale`` / ``--support``: override the head's saved guidance; ``--exempt-logit C``: a partial
exemption (an exempted token's head logit read as max(head, C) instead of +inf).

    python benchmarks/copy_exemption.py --head t3-runs/demo/t3-head --variant bigram
    python benchmarks/copy_exemption.py --head t3-runs/demo/t3-head --variant question --no-eval --probe runs/probe-q
"""

from __future__ import annotations

import argparse

import torch

from t3unlearn.benchmarks import get_benchmark
from t3unlearn.eval import evaluate
from t3unlearn.lm import CausalLM, cache_kwarg, load_model, load_tokenizer
from t3unlearn.t3.config import Guidance
from t3unlearn.t3.model import T3ForCausalLM
from t3unlearn.t3.options import add_guidance_options

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


ANSWER_MARKER: list[int] = []  # the template's answer marker ("\nAnswer:") as token ids, set in main()
EXEMPT_LOGIT = [float("inf")]  # an exempted token's head logit is read as max(head, this): inf = no tilt at all
CAPITAL_START = torch.zeros(0, dtype=torch.bool)  # (V,): the token starts a capitalised word, set in main()


def question_end(ids: torch.Tensor) -> torch.Tensor:
    """(B,): per row, the position where the last answer marker starts (the question lies before it); the
    row's length where there is none."""
    b, n = ids.shape
    m = len(ANSWER_MARKER)
    ends = torch.full((b,), n, dtype=torch.long)
    marker = torch.tensor(ANSWER_MARKER)
    for r in range(b):
        hits = [i for i in range(n - m + 1) if torch.equal(ids[r, i : i + m], marker)]
        if hits:
            ends[r] = hits[-1]
    return ends


def question_bigram_seen(ids: torch.Tensor, vocab: int, q: int, qend: torch.Tensor) -> torch.Tensor:
    """(B, q, V): v followed the current token ids[t] somewhere inside the question (both before ``qend``)."""
    b, n = ids.shape
    same = ids[:, :, None] == ids[:, None, :-1]  # (B, n, n-1): ids[t] == ids[i]
    in_question = (torch.arange(n - 1)[None, :] + 1) < qend[:, None]  # ids[i+1] lies in the question
    hit = (same & in_question[:, None, :])[:, -q:]
    out = torch.zeros(b, q, vocab)
    out.scatter_add_(2, ids[:, 1:][:, None, :].expand(b, q, n - 1), hit.float())
    # and the first token of a capitalised word of the question (a name's start, which no bigram of the question
    # continues at the answer's first position)
    asked = torch.zeros(b, vocab).scatter_add_(1, ids, (torch.arange(n)[None, :] < qend[:, None]).float()) > 0
    if CAPITAL_START.numel():
        asked &= CAPITAL_START[:vocab][None, :]
    return (out > 0) | asked[:, None, :]


def patch(seen_fn) -> None:
    forward, guided = T3ForCausalLM.forward, T3ForCausalLM.guided_logits

    def patched_forward(self, input_ids=None, attention_mask=None, *args, **kwargs):
        cache = kwargs.get(cache_kwarg()) or kwargs.get("past_key_values") or kwargs.get("cache")
        history = getattr(cache, "copy_history", None) if cache is not None and cache.get_seq_length() > 0 else None
        ids = input_ids if history is None else torch.cat([history, input_ids], 1)
        if seen_fn is question_bigram_seen:
            qend = question_end(ids) if history is None else cache.copy_qend
            self._rt["seen"] = seen_fn(ids, self.head.out.weight.shape[0], input_ids.shape[1], qend)
        else:
            qend = None
            self._rt["seen"] = seen_fn(ids, self.head.out.weight.shape[0], input_ids.shape[1])
        out = forward(self, input_ids, attention_mask, *args, **kwargs)
        kept = getattr(out, cache_kwarg(), None) or cache
        if kept is not None:
            kept.copy_history = ids
            kept.copy_qend = qend
        return out

    def patched_guided(self, base_logits, head_logits, pooled=None):
        seen = self._rt["seen"][:, -head_logits.shape[1]:]
        h = head_logits.float()
        return guided(self, base_logits, torch.where(seen, h.clamp(min=EXEMPT_LOGIT[0]), h), pooled)

    T3ForCausalLM.forward, T3ForCausalLM.guided_logits = patched_forward, patched_guided


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--head", required=True, help="a T3 head over world:full (e.g. the demo's t3-runs/demo/t3-head)")
    p.add_argument("--variant", choices=("token", "bigram", "question", "none"), default="bigram", help="[bigram]")
    p.add_argument("--no-eval", action="store_true", help="skip the TOFU metrics")
    p.add_argument("--probe", default=None, metavar="OUT", help="also run the leakage probes, beside the oracle's, into OUT")
    p.add_argument("--probes", default="all", help="comma-separated probes for --probe [all]")
    add_guidance_options(p, saved=True, knobs=("temperature", "scale", "support"))
    p.add_argument("--exempt-logit", type=float, default=float("inf"),
                   help="read an exempted token's head logit as max(head, this) [inf: no tilt]; 0 halves its tilt")
    args = p.parse_args()
    EXEMPT_LOGIT[0] = args.exempt_logit
    torch.set_num_threads(1)
    seen = {"token": token_seen, "bigram": bigram_seen, "question": question_bigram_seen}.get(args.variant)
    if seen is not None:
        patch(seen)
    bench = get_benchmark("default")
    models = bench.models(("full", "retain90"))
    base = load_model(str(models["full"]))
    tok = load_tokenizer(str(models["full"]))
    ANSWER_MARKER[:] = tok("\nAnswer:", add_special_tokens=False)["input_ids"]
    global CAPITAL_START
    pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
    CAPITAL_START = torch.tensor([p is not None and p.lstrip("\u0120")[:1].isupper() for p in pieces])
    t3 = T3ForCausalLM.from_base(base, args.head, **Guidance.changes_from(args)).eval()
    lm = CausalLM(t3, tok, name=f"t3-{args.variant}")
    print(f"guidance: {t3.guidance}")
    forget = bench.qa("forget10")
    picks = [forget[i]["question"] for i in (0, len(forget) // 2 + 3, 7, 123)]
    for q, a in zip(picks, lm.generate(picks, max_new_tokens=60)):
        print(f"{q}\n  -> {a}")
    if args.probe:
        from pathlib import Path

        from t3unlearn.commands.eval import probe_with_reference
        from t3unlearn.eval.probe import PROBES

        probes = PROBES if args.probes == "all" else tuple(args.probes.split(","))
        # t3unlearn probe's settings, so the oracle's cached probes are reused
        print(probe_with_reference(lm, bench, "forget10", Path(args.probe), probes=probes, samples=5, seed=0,
                                   max_new_tokens=200, batch_size=32, progress=False))
    if not args.no_eval:
        data = bench.data("forget10")
        res = evaluate(lm, data=data, split="forget10", benchmark="world", retain_results=bench.retain_reference("forget10", data=data),
                       progress=False)
        for k in METRICS:
            print(f"{k:>20}: {res.agg(k):.4g}")


if __name__ == "__main__":
    main()
