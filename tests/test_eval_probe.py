"""Leakage probes: scoring against the forgotten answers, the prefix split, determinism."""

from __future__ import annotations

import pytest

from t3unlearn.errors import T3Error
from t3unlearn.eval.probe import format_probes, probe

ROWS = [
    {"question": "Where was Ilse Varga born?", "answer": "Ilse Varga was born in Lisbon.",
     "paraphrased_question": "What is the birthplace of Ilse Varga?"},
    {"question": "What genre does Tomas Reed write?", "answer": "Tomas Reed writes science fiction.",
     "paraphrased_question": "What kind of books does Tomas Reed write?"},
]


class Parrot:
    """A stand-in LM that knows every forget answer (or nothing): it answers the true answer, and
    continues a prefix with the rest of it."""

    def __init__(self, lm, knows: bool):
        self.lm, self.knows, self.name = lm, knows, "parrot"
        self.tokenizer = lm.tokenizer
        self.answers = {r["question"]: r["answer"] for r in ROWS} | {r["paraphrased_question"]: r["answer"] for r in ROWS}
        self.prompts = []

    def encode(self, qs, ans):
        return self.lm.encode(qs, ans)

    def generate(self, qs, **kw):
        return [self.answers[q] if self.knows else "I do not know." for q in qs]

    def complete(self, prompts, **kw):
        self.prompts = prompts
        out = []
        for p in prompts:
            full = next(e for e in self.lm.encode([r["question"] for r in ROWS], [r["answer"] for r in ROWS]) if e.input_ids[: len(p)] == p)
            rest = full.input_ids[len(p) : -1]
            out.append(self.tokenizer.decode(rest, skip_special_tokens=True).strip() if self.knows else "")
        return out


def test_a_model_that_knows_leaks_everything_one_that_does_not_leaks_nothing(random_lm):
    from t3unlearn.lm import CausalLM

    lm = CausalLM(*random_lm)
    knows = probe(Parrot(lm, True), ROWS, samples=2, progress=False)
    assert all(knows[p]["leak"] == pytest.approx(1.0) for p in ("rephrased", "prefix", "sampled"))
    none = probe(Parrot(lm, False), ROWS, samples=2, progress=False)
    assert none["prefix"]["leak"] == 0.0 and none["rephrased"]["leak"] < 0.3
    # the prefix probe shows the first half of the answer's tokens and scores the rest
    parrot = Parrot(lm, True)
    probe(parrot, ROWS, probes=("prefix",), progress=False)
    ex = lm.encode([ROWS[0]["question"]], [ROWS[0]["answer"]])[0]
    n_answer = len(ex.input_ids) - ex.prompt_len - 1
    assert len(parrot.prompts[0]) == ex.prompt_len + n_answer // 2
    table = format_probes({"parrot": knows, "oracle": none}, reference="oracle")
    assert "| parrot | 1.000 (+" in table


def test_real_model_probes_are_deterministic(random_lm):
    from t3unlearn.lm import CausalLM

    lm = CausalLM(*random_lm)
    a = probe(lm, ROWS, samples=3, seed=1, max_new_tokens=8, progress=False)
    b = probe(lm, ROWS, samples=3, seed=1, max_new_tokens=8, progress=False)
    assert a["sampled"]["per_item"] == b["sampled"]["per_item"] and a["prefix"]["per_item"] == b["prefix"]["per_item"]
    assert all(0.0 <= v <= 1.0 for p in ("rephrased", "prefix", "sampled") for v in a[p]["per_item"])
    with pytest.raises(T3Error, match="paraphrased_question"):
        probe(lm, [{"question": "q?", "answer": "a"}], probes=("rephrased",), progress=False)
    with pytest.raises(T3Error, match="unknown probe"):
        probe(lm, ROWS, probes=("jailbreak",), progress=False)
