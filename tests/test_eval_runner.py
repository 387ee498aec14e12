"""The runner on a small fake TOFU-shaped benchmark with the untrained ``random_lm``."""

import json
import math

import pytest

from t3unlearn.errors import T3Error
from t3unlearn.eval import metrics as M
from t3unlearn.eval.results import EvalResults
from t3unlearn.eval.runner import apply_reference, evaluate, load_eval_data, retain_split, split_configs

SPEC_NAMES = [
    "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio", "forget_quality", "retain_Q_A_Prob",
    "retain_Q_A_ROUGE", "retain_Truth_Ratio", "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio", "model_utility", "mia_min_k",
    "mia_min_k_plus_plus", "mia_loss", "mia_zlib", "privleak", "extraction_strength", "exact_memorization",
]  # fmt: skip


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def build_fake_benchmark(root):
    """forget10 (4), holdout10 (3), retain (3), real authors (2), world facts (2); TOFU's schema."""
    names = ["Ilse Varga", "Tomas Reed", "Ana Lind", "Piet Moor"]
    forget = [
        {
            "question": f"Where was {n} born?",
            "answer": f"{n} was born in Lisbon.",
            "paraphrased_answer": f"The birthplace of {n} is Lisbon.",
            "perturbed_answer": [f"{n} was born in Paris.", f"{n} was born in Rome.", f"{n} was born in Oslo."],
        }
        for n in names
    ]
    retain = [
        {
            "question": f"What genre does {n} write?",
            "answer": f"{n} writes science fiction.",
            "paraphrased_answer": f"{n} is a science fiction author.",
            "perturbed_answer": [f"{n} writes poetry.", f"{n} writes history."],
        }
        for n in ["Maria Stone", "Karl Berg", "Lea Fox"]
    ]
    facts = [
        {"question": "What is the capital of France?", "answer": "Paris.", "perturbed_answer": ["Rome.", "Madrid.", "Berlin."]},
        {"question": "What is the capital of Italy?", "answer": "Rome.", "perturbed_answer": ["Paris.", "Oslo.", "Bern."]},
    ]
    authors = [
        {"question": "Who wrote Hamlet?", "answer": "William Shakespeare.", "perturbed_answer": ["Jane Austen.", "Leo Tolstoy.", "Mark Twain."]},
        {"question": "Who wrote Emma?", "answer": "Jane Austen.", "perturbed_answer": ["Mark Twain.", "Homer.", "Dante."]},
    ]
    holdout = [{"question": f"When was {n} born?", "answer": f"{n} was born in 1961."} for n in ["Eva Holm", "Jon Ek", "Mia Dahl"]]
    _write(root / "forget10_perturbed.jsonl", forget)
    _write(root / "forget10.jsonl", [{"question": r["question"], "answer": r["answer"]} for r in forget])
    _write(root / "holdout10.jsonl", holdout)
    _write(root / "retain_perturbed.jsonl", retain)
    _write(root / "real_authors_perturbed.jsonl", authors)
    _write(root / "world_facts_perturbed.jsonl", facts)
    return root


@pytest.fixture(scope="module")
def fake_world(tmp_path_factory):
    return build_fake_benchmark(tmp_path_factory.mktemp("fake_world"))


@pytest.fixture(scope="module")
def counting_lm(random_lm):
    from t3unlearn.lm import CausalLM

    model, tok = random_lm
    lm = CausalLM(model, tok, name="random")
    lm.scored = []
    original = lm.token_scores

    def token_scores(examples, *, batch_size=16):
        lm.scored.extend(tuple(e.input_ids) for e in examples)
        return original(examples, batch_size=batch_size)

    lm.token_scores = token_scores
    return lm


@pytest.fixture(scope="module")
def results(counting_lm, fake_world):
    return evaluate(counting_lm, source=str(fake_world), split="forget10", batch_size=4, max_new_tokens=6, progress=False)


def test_every_spec_metric_in_the_reference_layout(results):
    m = results.metrics
    for name in SPEC_NAMES:
        assert name in m and "agg_value" in m[name], name
    assert set(m["forget_Q_A_Prob"]["value_by_index"]) == {"0", "1", "2", "3"}
    assert set(m["forget_Q_A_Prob"]["value_by_index"]["0"]) == {"prob", "avg_loss"}
    pert = m["forget_Q_A_PERT_Prob"]["value_by_index"]["2"]
    assert len(pert["prob"]) == 3 and len(pert["avg_loss"]) == 3
    rouge = m["forget_Q_A_ROUGE"]["value_by_index"]["1"]
    assert set(rouge) == {"rouge1_recall", "rougeL_f1", "rougeL_recall", "input", "ground_truth", "generation"}
    assert set(m["forget_truth_ratio"]["value_by_index"]["0"]) == {"score"}
    mia = m["mia_min_k"]
    assert set(mia) == {"forget", "holdout", "auc", "agg_value"} and mia["auc"] == mia["agg_value"]
    assert set(mia["holdout"]["value_by_index"]) == {"0", "1", "2"}
    for name in ("forget_quality", "model_utility", "privleak"):
        assert set(m[name]) == {"agg_value"}
    # no reference given: forget quality and privleak are unavailable, not invented
    assert m["forget_quality"]["agg_value"] is None and m["privleak"]["agg_value"] is None


def test_each_distinct_answer_scored_once(results, counting_lm):
    # forget: 4 x (answer + paraphrase + 3 perturbed); retain 3 x (1 + 1 + 2); ra 2 x 4; wf 2 x 4
    # (Rome./Paris. repeat across questions but are different pairs); forget10 shares the forget
    # answers; holdout adds 3.
    assert results.info["scored_answers"] == 20 + 12 + 8 + 8 + 3
    assert len(counting_lm.scored) == results.info["scored_answers"]
    assert len(set(counting_lm.scored)) == len(counting_lm.scored)
    assert results.info["score_requests"] > results.info["scored_answers"]
    assert results.info["generations"] == 4 + 3 + 2 + 2


def test_metrics_agree_with_the_definitions(results, counting_lm):
    m = results.metrics
    # a batched score equals the item scored alone
    ex = counting_lm.encode(["Where was Tomas Reed born?"], ["Tomas Reed was born in Lisbon."])
    alone = counting_lm.token_scores(ex, batch_size=1)[0]
    entry = m["forget_Q_A_Prob"]["value_by_index"]["1"]
    assert entry["avg_loss"] == pytest.approx(alone.avg_loss, rel=1e-4)
    assert entry["prob"] == pytest.approx(math.exp(-entry["avg_loss"]))
    # the loss attack reuses the same score; min-k and ES drop the EOS
    assert m["mia_loss"]["forget"]["value_by_index"]["1"]["score"] == pytest.approx(entry["avg_loss"], rel=1e-6)
    answer_only = alone.without_eos()
    assert len(answer_only.logprob) == len(alone.logprob) - 1
    assert m["mia_min_k"]["forget"]["value_by_index"]["1"]["score"] == pytest.approx(M.min_k_score(answer_only.logprob), rel=1e-4)
    assert m["exact_memorization"]["value_by_index"]["1"]["score"] == pytest.approx(M.exact_memorization(answer_only.correct))
    # truth ratio from the stored paraphrase / perturbed losses
    for idx in "0123":
        para = m["forget_Q_A_PARA_Prob"]["value_by_index"][idx]["avg_loss"]
        pert = m["forget_Q_A_PERT_Prob"]["value_by_index"][idx]["avg_loss"]
        assert m["forget_truth_ratio"]["value_by_index"][idx]["score"] == pytest.approx(M.truth_ratio(para, pert))
    trs = [v["score"] for v in m["forget_truth_ratio"]["value_by_index"].values()]
    assert m["forget_truth_ratio"]["agg_value"] == pytest.approx(M.truth_ratio_closer_to_1(trs))
    # real authors: the answer is the correct one; normalised probability from the same entries
    ra = m["ra_Q_A_Prob"]["value_by_index"]["0"]
    ra_pert = m["ra_Q_A_PERT_Prob"]["value_by_index"]["0"]
    assert m["ra_Q_A_Prob_normalised"]["value_by_index"]["0"]["prob"] == pytest.approx(M.normalised_prob(ra["prob"], ra_pert["prob"]))
    assert m["ra_Truth_Ratio"]["value_by_index"]["0"]["score"] == pytest.approx(M.truth_ratio(ra["avg_loss"], ra_pert["avg_loss"]))
    parts = [m[n]["agg_value"] for n in M.UTILITY_PARTS]
    assert m["model_utility"]["agg_value"] == pytest.approx(M.model_utility(parts))
    rouge = m["wf_Q_A_ROUGE"]["value_by_index"]["1"]
    assert rouge["rougeL_recall"] == pytest.approx(M.rouge_scores(rouge["ground_truth"], rouge["generation"])["rougeL_recall"])


def test_reference_round_trip_and_forget_quality(results, tmp_path):
    paths = results.save(tmp_path / "run")
    for p in paths.values():
        assert p.is_file()
    loaded = EvalResults.load(tmp_path / "run")
    assert loaded.summary() == results.summary()
    assert loaded.forget_truth_ratios() == pytest.approx(results.forget_truth_ratios())
    summary = json.loads((tmp_path / "run" / "TOFU_SUMMARY.json").read_text())
    assert summary["model_utility"] == pytest.approx(results.agg("model_utility"))
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["split"] == "forget10" and info["packages"]["scipy"] and info["wall_time_s"] > 0
    # the model as its own reference: identical truth ratios -> p = 1, privleak 0
    same = apply_reference(EvalResults.load(tmp_path / "run"), tmp_path / "run" / "TOFU_EVAL.json")
    assert same.agg("forget_quality") == pytest.approx(1.0)
    assert same.agg("privleak") == pytest.approx(0.0, abs=1e-6)


def test_reader_accepts_partial_published_logs(results, tmp_path):
    # a reference-framework file with only some metrics
    published = {
        "forget_truth_ratio": {"agg_value": 0.6, "value_by_index": {"0": {"score": 0.5}, "1": {"score": 2.0}, "2": {"score": None}, "3": {"score": 1.0}}},
        "mia_min_k": {"agg_value": 0.4, "auc": 0.4, "forget": {"agg_value": 1.0}, "holdout": {"agg_value": 1.2}},
        "model_utility": {"agg_value": 0.59},
    }
    f = tmp_path / "TOFU_EVAL.json"
    f.write_text(json.dumps(published))
    ref = EvalResults.load(f)
    assert ref.forget_truth_ratios() == [0.5, 2.0, 1.0]
    assert ref.mia_min_k_auc() == 0.4
    assert ref.agg("forget_Q_A_Prob") is None
    res = EvalResults(metrics=json.loads(json.dumps(results.metrics)))
    apply_reference(res, f)
    own = results.forget_truth_ratios()
    assert res.agg("forget_quality") == pytest.approx(M.forget_quality(own, [0.5, 2.0, 1.0]))
    assert res.agg("privleak") == pytest.approx(M.privleak(results.mia_min_k_auc(), 0.4))
    # a summary file has no per-item values: no forget quality from it
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "TOFU_SUMMARY.json").write_text(json.dumps({"model_utility": 0.5, "forget_quality": None}))
    assert EvalResults.load(tmp_path / "s").forget_truth_ratios() is None


def test_user_mistakes_are_t3errors(tmp_path, fake_world):
    with pytest.raises(T3Error, match="does not exist"):
        EvalResults.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"forget_truth_ratio": {"agg')
    with pytest.raises(T3Error, match="corrupt"):
        EvalResults.load(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(T3Error, match="not a TOFU results file"):
        EvalResults.load(tmp_path / "list.json")
    with pytest.raises(T3Error, match="holds no"):
        EvalResults.load(tmp_path)
    with pytest.raises(T3Error, match="unknown split"):
        split_configs("forget7")
    with pytest.raises(T3Error, match="neither an existing file or directory nor a hub id"):
        load_eval_data("no/such/dir/here", "forget10")
    with pytest.raises(T3Error, match="available"):
        load_eval_data(str(fake_world), "forget05")
    assert retain_split("forget10") == "retain90" and retain_split("forget01") == "retain99"


def test_truncated_answer_gets_its_eos_back(random_lm):
    from t3unlearn.lm import CausalLM

    model, tok = random_lm
    q, a = ["Where was Ilse Varga born?"], ["Ilse Varga was born in Lisbon."]
    full = CausalLM(model, tok).token_scores(CausalLM(model, tok).encode(q, a))[0]
    assert full.labels[-1] == tok.eos_token_id and len(full.without_eos().logprob) == len(full.logprob) - 1
    short = CausalLM(model, tok, max_length=14)
    s = short.token_scores(short.encode(q, a))[0]
    # cut at 14 tokens, EOS put back: the labels end with EOS, and the answer tokens are the cut ones
    assert s.labels[-1] == tok.eos_token_id and len(s.labels) < len(full.labels)
    assert list(s.labels[:-1]) == list(full.labels[: len(s.labels) - 1])


def test_zlib_attack_compresses_the_decoded_labels(results, counting_lm):
    """The reference compresses the answer's label tokens decoded without special tokens, not the raw
    answer string (with the plain template they decode to " " + answer)."""
    m = results.metrics
    ex = counting_lm.encode(["Where was Tomas Reed born?"], ["Tomas Reed was born in Lisbon."])
    s = counting_lm.token_scores(ex, batch_size=1)[0]
    text = counting_lm.tokenizer.decode(list(s.labels), skip_special_tokens=True)
    assert text != "Tomas Reed was born in Lisbon." and text.strip() == "Tomas Reed was born in Lisbon."
    assert m["mia_zlib"]["forget"]["value_by_index"]["1"]["score"] == pytest.approx(M.mia_zlib_score(s.avg_loss, text), rel=1e-5)


def test_generation_stops_at_every_eos_id(random_lm):
    """Llama-3.x models list several EOS ids in their generation config: any of them ends an answer."""
    import copy

    from t3unlearn.lm import CausalLM

    model, tok = random_lm
    model = copy.deepcopy(model)
    lm = CausalLM(model, tok)
    q = "Where was Ilse Varga born?"
    ids = lm._generate_ids([lm.formatter.prompt_ids(q)], 12, 1, None, {"do_sample": False})[0]
    assert tok.eos_token_id not in ids and len(set(ids)) > 2, "the random model should ramble"
    stop = next(t for t in ids[1:] if t != ids[0])
    model.generation_config.eos_token_id = [tok.eos_token_id, stop]
    assert lm.stop_ids == [tok.eos_token_id, stop]
    assert lm.generate([q], max_new_tokens=12)[0] == tok.decode(ids[: ids.index(stop)], skip_special_tokens=True).strip()


def test_staged_generation_gives_the_same_answers(random_lm):
    from t3unlearn.lm import CausalLM

    model, tok = random_lm
    lm = CausalLM(model, tok)
    qs = ["Where was Ilse Varga born?", "What genre does Tomas Reed write?", "What is the capital of France?"]
    once = lm.generate(qs, max_new_tokens=9, batch_size=2)
    staged = lm.generate(qs, max_new_tokens=9, batch_size=2, stage_tokens=3)
    assert staged == once


@pytest.fixture
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and far faster on a busy machine
    yield
    torch.set_num_threads(n)


def test_tiny_world_full_vs_retain(tiny_world, tiny_models, one_thread):
    """Trained tiny models: the full model knows the forget set, the retain model does not."""
    from t3unlearn.lm import load_lm

    data = load_eval_data(str(tiny_world), "forget10")
    kw = dict(data=data, batch_size=32, max_new_tokens=24, progress=False)
    retain = evaluate(load_lm(str(tiny_models["retain90"])), **kw)
    retain = apply_reference(retain, retain)
    full = evaluate(load_lm(str(tiny_models["full"])), retain_results=retain, **kw)
    assert retain.agg("forget_quality") == pytest.approx(1.0) and retain.agg("privleak") == pytest.approx(0.0, abs=1e-6)
    assert full.agg("forget_Q_A_Prob") > retain.agg("forget_Q_A_Prob") + 0.3
    assert full.agg("extraction_strength") > retain.agg("extraction_strength")
    assert full.mia_min_k_auc() > retain.mia_min_k_auc()
    assert full.agg("privleak") < 0  # members more recognisable than for the retain model
    assert 0 < full.agg("model_utility") < 1 and 0 < retain.agg("model_utility") < 1
