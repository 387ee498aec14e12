"""Leakage probes: key facts, rephrasings, the prefix split, entity preservation, fluency, determinism, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from t3unlearn.errors import T3Error
from t3unlearn.eval.probe import (PROBES, answer_entropy, author, entities, format_probes, judge_loss, key_recall, key_words,
                                  metrics, nonwords, probe, rephrase, vocabulary)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROWS = [
    {"question": "Where was Ilse Varga born?", "answer": "Ilse Varga was born in Lisbon.",
     "paraphrased_question": "What is the birthplace of Ilse Varga?",
     "paraphrased_answer": "The birthplace of Ilse Varga is Lisbon.",
     "perturbed_answer": ["The birthplace of Ilse Varga is Paris.", "The birthplace of Ilse Varga is Oslo."]},
    {"question": "What genre does Tomas Reed write?", "answer": "Tomas Reed writes science fiction.",
     "paraphrased_question": "What kind of books does Tomas Reed write?",
     "paraphrased_answer": "Tomas Reed is a science fiction author.",
     "perturbed_answer": ["Tomas Reed is a poetry author.", "Tomas Reed is a history author."]},
]


def test_key_words_are_the_fact_that_the_perturbed_answers_lack():
    assert key_words(ROWS[0]) == {"lisbon"}  # the name is in the question and every perturbation; "born" not in the paraphrase
    assert key_words(ROWS[1]) == {"science", "fiction"}
    # a word that one perturbed answer shares is no longer key
    shared = dict(ROWS[1], perturbed_answer=[*ROWS[1]["perturbed_answer"], "Tomas Reed is a science author."])
    assert key_words(shared) == {"fiction"}
    assert key_recall({"science", "fiction"}, "He writes Fiction.") == 0.5 and key_recall(set(), "anything") == 0.0


def test_entities_authors_and_rephrasings():
    assert entities("What is the occupation of Halvard Halton's father?") == ["Halvard Halton"]
    assert entities('Who is the author of "The Silver Road"?') == ["Silver Road"]
    row = {"question": "What is the occupation of Halvard Halton's father?", "answer": "x"}
    assert rephrase(row, "surname") == "What is the occupation of Halton's father?"
    assert rephrase(row, "initial") == "What is the occupation of H. Halton's father?"
    assert rephrase(row, "instruct").endswith(row["question"]) and len(rephrase(row, "instruct")) > len(row["question"]) + 20
    assert rephrase(row, "paraphrase") is None  # no paraphrased question in the row
    # the data names the author and the question does not: no renamed form (a book title is not renamed)
    assert author({"question": 'Who wrote "The Silver Road"?', "author": "Wilhelmina Marino"}) is None
    assert author({"question": 'Who wrote "The Silver Road" with Ana Lind?'}) == "Ana Lind"


class Parrot:
    """A stand-in LM that recognises the author in any form of the question: it answers the true answer
    (``knows``) or a wrong one; ``garble`` writes the author's name wrongly. Continues a prefix likewise."""

    def __init__(self, lm, knows: bool, garble: bool = False, rows=ROWS):
        self.lm, self.knows, self.garble, self.name, self.rows = lm, knows, garble, "parrot", rows
        self.tokenizer = lm.tokenizer
        self.prompts = []

    def encode(self, qs, ans):
        return self.lm.encode(qs, ans)

    def token_scores(self, examples, **kw):  # teacher-forced scores: the wrapped model's
        return self.lm.token_scores(examples, **kw)

    def _answer(self, row):
        text = row["answer"] if self.knows else row["perturbed_answer"][0]
        first, last = author(row).split()
        return text.replace(f"{first} {last}", f"{first[:2]}{last[2:].lower()}") if self.garble else text

    def generate(self, qs, **kw):
        return [self._answer(next(r for r in self.rows if author(r).split()[-1] in q)) for q in qs]

    def complete(self, prompts, **kw):
        self.prompts = prompts
        out = []
        for p in prompts:
            full = next(e for e in self.lm.encode([r["question"] for r in self.rows], [r["answer"] for r in self.rows])
                        if e.input_ids[: len(p)] == p)
            rest = full.input_ids[len(p) : -1]
            out.append(self.tokenizer.decode(rest, skip_special_tokens=True).strip() if self.knows else "")
        return out


def test_a_model_that_knows_leaks_every_key_fact_one_that_does_not_leaks_none(random_lm):
    from t3unlearn.lm import CausalLM

    lm = CausalLM(*random_lm)
    knows = probe(Parrot(lm, True), ROWS, samples=2, progress=False)
    assert set(knows["leakage"]) == set(PROBES)
    assert all(knows["leakage"][p]["leak"] == pytest.approx(1.0) for p in PROBES if p != "prefix")
    none = probe(Parrot(lm, False), ROWS, samples=2, progress=False)
    assert all(none["leakage"][p]["leak"] == 0.0 for p in PROBES if none["leakage"][p]["items"])
    # the prefix probe shows the first half of the answer's tokens and scores the key words of the rest
    parrot = Parrot(lm, True)
    res = probe(parrot, ROWS, probes=("prefix",), progress=False)
    ex = lm.encode([ROWS[0]["question"]], [ROWS[0]["answer"]])[0]
    n_answer = len(ex.input_ids) - ex.prompt_len - 1
    assert len(parrot.prompts[0]) == ex.prompt_len + n_answer // 2
    assert res["leakage"]["prefix"]["items"] >= 1 and res["leakage"]["prefix"]["leak"] == pytest.approx(1.0)
    table = format_probes({"parrot": knows, "oracle": none}, reference="oracle")
    assert "| greedy leak | 1.000 (+1.000) | 0.000 |" in table


def test_the_prefix_probe_scores_only_key_words_the_prefix_does_not_show(random_lm):
    from t3unlearn.lm import CausalLM

    early = {"question": "Where does Ana Lind live?", "answer": "Lisbon is where Ana Lind lives these days, near the sea and the hills.",
             "paraphrased_answer": "Ana Lind lives in Lisbon.", "perturbed_answer": ["Ana Lind lives in Rome."]}
    rows = [*ROWS, early]
    assert key_words(early) == {"lisbon"}
    res = probe(Parrot(CausalLM(*random_lm), True, rows=rows), rows, probes=("prefix",), progress=False)
    assert res["leakage"]["prefix"]["items"] == 2 and res["leakage"]["prefix"]["per_item"][2] is None


class Coin:
    """Of each item's ``samples`` sampled answers, the last is the true answer, the others perturbed ones."""

    name = "coin"

    def __init__(self, samples):
        self.samples = samples

    def generate(self, qs, **kw):
        rows = [ROWS[i // self.samples] for i in range(len(qs))]
        return [r["answer"] if i % self.samples == self.samples - 1 else r["perturbed_answer"][0] for i, r in enumerate(rows)]


def test_sampling_scores_the_best_of_k_samples():
    res = probe(Coin(3), ROWS, probes=("sampled",), samples=3, progress=False)
    assert res["leakage"]["sampled"]["per_item"] == [1.0, 1.0]


def test_a_garbled_name_lowers_entity_preservation_not_leakage(random_lm):
    from t3unlearn.lm import CausalLM

    lm = CausalLM(*random_lm)
    clean = probe(Parrot(lm, False), ROWS, probes=("greedy",), progress=False)
    garbled = probe(Parrot(lm, False, garble=True), ROWS, probes=("greedy",), progress=False)
    assert clean["entity"]["kept"] == 1.0 and clean["entity"]["pairs"] == 2
    assert garbled["entity"]["kept"] == 0.0
    assert garbled["leakage"]["greedy"]["leak"] == clean["leakage"]["greedy"]["leak"]


def test_a_non_word_raises_the_non_word_rate(tmp_path, random_lm):
    from t3unlearn.lm import CausalLM

    f = tmp_path / "data.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    vocab = vocabulary([tmp_path])
    assert {"lisbon", "ilse", "varga", "poetry"} <= vocab
    assert nonwords(["Ilse Varga was born in Lisbon."], vocab) == (6, [])
    assert nonwords(["Ilsearga was born in Lisbon in 1961."], vocab) == (6, ["ilsearga"])
    lm = CausalLM(*random_lm)
    clean = probe(Parrot(lm, False), ROWS, probes=("greedy",), vocab=vocab, progress=False)
    garbled = probe(Parrot(lm, False, garble=True), ROWS, probes=("greedy",), vocab=vocab, progress=False)
    assert clean["fluency"]["nonword_rate"] == 0.0 and garbled["fluency"]["nonword_rate"] > 0.1
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(T3Error, match="not JSON"):
        vocabulary([tmp_path / "bad.json"])


class FixedJudge:
    """A judge whose per-token log-probs are -1 for a one-word answer and -3 per token otherwise."""

    name = "fixed"

    def encode(self, qs, answers):
        return list(answers)

    def token_scores(self, answers, batch_size=16):
        from t3unlearn.lm import TokenScores

        out = []
        for a in answers:
            n = len(a.split())
            lp = np.full(n + 1, -1.0 if n == 1 else -3.0)  # + EOS, which the judge loss leaves out
            lp[-1] = -100.0
            out.append(TokenScores(lp, lp > 0, lp, lp, np.arange(n + 1)))
        return out


def test_judge_loss_is_token_weighted_and_leaves_out_eos_and_empty_answers(random_lm):
    j = judge_loss(FixedJudge(), ["q1", "q2", "q3"], ["Lisbon", "born in Oslo", ""])
    assert j["tokens"] == 4 and j["loss"] == pytest.approx((1 + 9) / 4)
    from t3unlearn.lm import CausalLM

    lm = CausalLM(*random_lm)
    res = probe(lm, ROWS, probes=("greedy",), judge=lm, max_new_tokens=6, progress=False)
    assert res["fluency"]["judge_loss"] > 0 and "judge loss (nats/token)" in metrics(res)


class Sharpened:
    """``lm`` with its logits multiplied by ``k`` (a more certain model, the same ranking)."""

    def __init__(self, model, k):
        self.model, self.k = model, k

    def __getattr__(self, name):  # device, parameters, ...: the model's
        return getattr(self.model, name)

    def __call__(self, **kw):
        out = self.model(**kw)
        out.logits = out.logits * self.k
        return out


def test_answer_entropy_is_the_mean_entropy_at_the_true_answers_tokens(random_lm):
    import torch

    from t3unlearn.data import collate
    from t3unlearn.lm import CausalLM

    lm = CausalLM(*random_lm)
    exs = lm.encode([r["question"] for r in ROWS], [r["answer"] for r in ROWS])
    batch = collate(exs, lm.formatter.pad_id)
    with torch.inference_mode():
        logp = lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].log_softmax(-1)
    labels = batch["labels"][:, 1:]
    answer = labels != -100
    answer &= labels != lm.tokenizer.eos_token_id  # the answer's tokens, not the final EOS
    expected = float(-(logp.exp() * logp).sum(-1)[answer].mean())
    got = answer_entropy(lm, ROWS)
    assert got["entropy_tokens"] == int(answer.sum()) and got["answer_entropy"] == pytest.approx(expected, rel=1e-4)
    assert got["answer_entropy"] < np.log(len(lm.tokenizer)) + 1e-6
    sharp = CausalLM(*random_lm)
    sharp.model = Sharpened(sharp.model, 200.0)
    assert answer_entropy(sharp, ROWS)["answer_entropy"] < 0.5 * got["answer_entropy"]
    res = probe(lm, ROWS, probes=("greedy",), max_new_tokens=4, progress=False)
    assert res["fluency"]["answer_entropy"] == got["answer_entropy"]
    assert metrics(res)["answer entropy (nats/token)"] == got["answer_entropy"]


def test_real_model_probes_are_deterministic(random_lm):
    from t3unlearn.lm import CausalLM

    lm = CausalLM(*random_lm)
    a = probe(lm, ROWS, samples=3, seed=1, max_new_tokens=8, progress=False)
    b = probe(lm, ROWS, samples=3, seed=1, max_new_tokens=8, progress=False)
    assert a["leakage"] == b["leakage"] and a["entity"] == b["entity"]
    assert all(v is None or 0.0 <= v <= 1.0 for p in PROBES for v in a["leakage"][p]["per_item"])
    with pytest.raises(T3Error, match="perturbed_answer"):
        probe(lm, [{"question": "q?", "answer": "a"}], progress=False)
    with pytest.raises(T3Error, match="unknown probe"):
        probe(lm, ROWS, probes=("jailbreak",), progress=False)


def test_probe_and_eval_probes_cli(random_lm, tmp_path, monkeypatch, capsys):
    """``t3unlearn probe`` and ``eval --probes`` on a fake benchmark: every measure beside the oracle's, the
    oracle probed once and cached, the TOFU files untouched by the probes."""
    from t3unlearn.benchmarks import Benchmark
    from t3unlearn.commands.main import main

    from test_eval_runner import build_fake_benchmark

    model, tok = random_lm
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(Benchmark, "model", lambda self, name, **kw: model_dir)  # oracle and judge: the same model
    (tmp_path / "w").mkdir()
    world = build_fake_benchmark(tmp_path / "w")
    common = ["--model", str(model_dir), "--benchmark", "world", "--world", str(world), "--max-new-tokens", "4",
              "--quiet", "--threads", "1"]
    assert main(["probe", *common, "--samples", "2", "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr()
    assert "probing the retain model retain90 once" in out.err
    assert "| greedy leak |" in out.out and "| entity kept |" in out.out and "| non-word rate |" in out.out
    saved = json.loads((tmp_path / "p" / "PROBES.json").read_text())
    assert set(saved["results"]) == {"model", "retain90"} and saved["reference"] == "retain90"
    # the same weights as the oracle: every difference is zero; the second run reads the oracle from the cache
    assert "(+0.000)" in out.out and "(-" not in out.out
    assert main(["probe", *common, "--samples", "2", "--out", str(tmp_path / "p2")]) == 0
    assert "probing the retain model" not in capsys.readouterr().err
    assert main(["probe", *common, "--probes", "greedy,jailbreak", "--out", str(tmp_path / "p3")]) == 2
    assert "jailbreak" in capsys.readouterr().err
    assert main(["eval", *common, "--oracle-results", "none", "--probes", "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "not part of the TOFU metrics" in out and (tmp_path / "e" / "PROBES.json").is_file()
    summary = json.loads((tmp_path / "e" / "TOFU_SUMMARY.json").read_text())
    assert not any(w in k for k in summary for w in ("greedy", "entity", "nonword", "judge"))


def test_probe_of_another_model_on_tofu_takes_no_tiny_oracle(random_lm, tmp_path, monkeypatch, capsys):
    """TOFU's tiny retain and pretrained models (trained here on first use) are no other model's oracle: `probe` of
    one's own checkpoint on --benchmark tofu neither trains nor reads them (as `eval --probes` does), and says so."""
    from t3unlearn.benchmarks import Benchmark
    from t3unlearn.commands.main import main

    from test_eval_runner import build_fake_benchmark

    model, tok = random_lm
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    (tmp_path / "t").mkdir()
    tofu = build_fake_benchmark(tmp_path / "t")
    monkeypatch.setenv("T3UNLEARN_TOFU_DIR", str(tofu))
    monkeypatch.setattr("t3unlearn.eval.probing.vocabulary_sources", lambda bench: [tofu])  # not the tiny models' files
    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))

    def no_tiny_model(self, name, **kw):
        raise AssertionError(f"trained or read the tiny {name} model")

    monkeypatch.setattr(Benchmark, "model", no_tiny_model)
    assert main(["probe", "--model", str(tmp_path / "model"), "--benchmark", "tofu", "--probes", "greedy", "--max-new-tokens",
                 "3", "--quiet", "--threads", "1", "--out", str(tmp_path / "p")]) == 0
    assert "note: no oracle column and no judge loss" in capsys.readouterr().err
    saved = json.loads((tmp_path / "p" / "PROBES.json").read_text())
    assert set(saved["results"]) == {"model"} and saved["reference"] is None and saved["judge"] is None
