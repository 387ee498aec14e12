"""What an attacker gets out of a model about the forget set, beyond the TOFU metrics.

Three probes, each scored as the ROUGE-L recall of what the model says against the forgotten answer
(the same scorer as TOFU's ROUGE), averaged over the forget items. A model that never saw the forget
set still scores above 0 (answers share a template, common words, guessable facts), so the number to
compare with is the retain (oracle) model's under the same probe:

- ``rephrased``: the question asked another way (TOFU's ``paraphrased_question``), greedy answer;
- ``prefix``: the question plus the first half of the true answer's tokens, greedy continuation, scored
  against the rest of the answer (an attacker who knows how the answer starts);
- ``sampled``: ``samples`` answers sampled at temperature 1 (the model's own distribution, no truncation),
  scored by the best of them per item (an attacker who can ask again and recognise the truth).

Deterministic for a seed: sampling draws from ``torch`` seeded once before the sampled probe.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np

from t3unlearn.errors import T3Error
from t3unlearn.eval.metrics import rouge_scores

PROBES = ("rephrased", "prefix", "sampled")


def _recall(reference: str, generation: str) -> float:
    return float(rouge_scores(reference, generation)["rougeL_recall"]) if reference.strip() else 0.0


def probe(lm, rows: Sequence[dict], *, probes: Sequence[str] = PROBES, prefix_fraction: float = 0.5, samples: int = 5,
          seed: int = 0, max_new_tokens: int = 200, batch_size: int = 16, progress: bool = True) -> dict[str, Any]:
    """Run the probes on ``rows`` (forget items: ``question``, ``answer``, and ``paraphrased_question``
    for the rephrased probe). Returns ``{probe: {"leak": mean, "per_item": [...]}, "info": {...}}``."""
    import torch

    from t3unlearn.progress import progress as progress_bar

    bad = [p for p in probes if p not in PROBES]
    if bad:
        raise T3Error(f"unknown probe(s) {', '.join(bad)}; choose from {', '.join(PROBES)}.")
    if not 0 < prefix_fraction < 1:
        raise T3Error(f"the prefix fraction must be in (0, 1), not {prefix_fraction}.")
    if samples < 1:
        raise T3Error(f"samples must be >= 1, not {samples}.")
    rows = list(rows)
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    bar = progress_bar(total=len(probes), desc="probe", unit="probe", enabled=progress)
    if "rephrased" in probes:
        qs = [r.get("paraphrased_question") for r in rows]
        if any(not q for q in qs):
            raise T3Error("the rephrased probe needs a 'paraphrased_question' per item (TOFU's forgetXX_perturbed has one).")
        gens = lm.generate(qs, max_new_tokens=max_new_tokens, batch_size=batch_size)
        per = [_recall(r["answer"], g) for r, g in zip(rows, gens)]
        out["rephrased"] = {"leak": float(np.mean(per)), "per_item": per, "examples": gens[:3]}
        bar.update(1)
    if "prefix" in probes:
        examples = lm.encode([r["question"] for r in rows], [r["answer"] for r in rows])
        prompts, targets = [], []
        for e in examples:
            answer = e.input_ids[e.prompt_len : -1]  # the answer's tokens, EOS left out
            k = max(1, math.floor(len(answer) * prefix_fraction))
            prompts.append(e.input_ids[: e.prompt_len + k])
            targets.append(lm.tokenizer.decode(answer[k:], skip_special_tokens=True).strip())
        gens = lm.complete(prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        per = [_recall(t, g) for t, g in zip(targets, gens)]
        out["prefix"] = {"leak": float(np.mean(per)), "per_item": per, "prefix_fraction": prefix_fraction}
        bar.update(1)
    if "sampled" in probes:
        qs = [r["question"] for r in rows for _ in range(samples)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gens = lm.generate(qs, max_new_tokens=max_new_tokens, batch_size=batch_size, do_sample=True,
                               temperature=1.0, top_p=1.0, top_k=0)
        per = [max(_recall(r["answer"], g) for g in gens[i * samples : (i + 1) * samples]) for i, r in enumerate(rows)]
        out["sampled"] = {"leak": float(np.mean(per)), "per_item": per, "samples": samples}
        bar.update(1)
    bar.close()
    out["info"] = {"items": len(rows), "seed": seed, "max_new_tokens": max_new_tokens, "wall_time_s": round(time.perf_counter() - t0, 2),
                   "name": getattr(lm, "name", None)}
    return out


def format_probes(results: dict[str, dict], *, reference: str | None = None) -> str:
    """A markdown table of leakage per model and probe; with ``reference`` (a model name among the
    results), the difference to it in parentheses."""
    names = list(results)
    probes = [p for p in PROBES if any(p in r for r in results.values())]
    lines = ["| model | " + " | ".join(f"{p} leak" for p in probes) + " |", "|---|" + "---:|" * len(probes)]
    ref = results.get(reference) if reference else None
    for name in names:
        cells = []
        for p in probes:
            v = results[name].get(p, {}).get("leak")
            if v is None:
                cells.append("n/a")
            elif ref is not None and name != reference and p in ref:
                cells.append(f"{v:.3f} ({v - ref[p]['leak']:+.3f})")
            else:
                cells.append(f"{v:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
