"""benchmarks/bench_cost.py: the parameter counts, the word-level tokenizer and the cost model it fits."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def bench(benchmark_script):
    return benchmark_script("bench_cost")


@pytest.mark.parametrize("cfg", [dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=86, tie_word_embeddings=True),
                                 dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=2,
                                      intermediate_size=96, tie_word_embeddings=False)])
def test_shape_counts_the_parameters_a_llama_has(bench, cfg):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(cfg, vocab_size=500)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    sh = bench.shape(cfg)
    assert sh["params"] == sum(p.numel() for p in model.parameters())
    assert sh["non_embedding"] == sum(p.numel() for p in model.model.layers.parameters()) + cfg["hidden_size"]


def test_one_word_is_one_token_of_a_32k_vocabulary_half_of_them_word_pieces(bench):
    from t3unlearn.data import QAFormatter
    from t3unlearn.t3.head import word_pieces

    tok = bench.tokenizer()
    assert len(tok) == bench.VOCAB == 32000
    fmt = QAFormatter(tok, template="plain")
    w = bench.word
    ex = fmt.encode(f"{w(10)} {w(11)} {w(12)}", f"{w(31999)} {w(6)}")
    # BOS, Question:, 3 words, Answer:, 2 answer words, EOS
    assert len(ex.input_ids) == 9 and ex.input_ids[-3:] == [31999, 6, tok.eos_token_id]
    assert sum(1 for x in ex.labels if x != -100) == 3
    # the base's spelling has work to do: every odd id continues a word (SentencePiece's mark on the others)
    pieces = word_pieces(tok, bench.VOCAB)
    assert pieces[7::2].all() and not pieces[6::2].any() and int(pieces.sum()) == (bench.VOCAB - 6) // 2
    assert len({w(i) for i in range(6, bench.VOCAB)}) == bench.VOCAB - 6


def test_the_cost_model_recovers_known_coefficients_and_extrapolates_with_the_vocabulary(bench):
    facts = dict(tokens=1000, width=50, head_tokens=2000, head_steps=100, cal_tokens=3000, positions=500, settings=66,
                 train_tokens=4000, selection_tokens=2500, reference_tokens=1500)
    true = {p: (2e-9, 3e-3) if p in ("features", "graddiff", "npo") else (1e-9, 2e-8) for p in bench.PARTS}
    rows = {}
    for size in bench.SIZES:
        sh = bench.shape(dict(bench.SIZES[size], vocab_size=bench.VOCAB))
        rows[size] = {p: {"seconds": a * F + b * G} for p, (a, b) in true.items() for F, G in [bench.drivers(p, sh, facts)]}
    model = bench.fit(rows, facts)
    for p, (a, b) in true.items():
        assert model[p] == pytest.approx([a, b], rel=1e-6)
    big = bench.shape(bench.TARGETS["Llama-3.2-1B"])
    F, G = bench.drivers("calibration", big, facts)
    assert bench.predict(model, "calibration", big, facts) == pytest.approx(1e-9 * F + 2e-8 * G)
    assert G == 66 * 500 * 128256  # the grid's work grows with the vocabulary


def test_a_sweep_as_compare_runs_it_pays_each_setting_its_epochs_and_its_quick_evaluation(bench):
    epochs = bench.sweep_epochs("graddiff")
    assert len(epochs) >= 6 and set(epochs) <= {5, 10}  # compare's default sweep: learning rate x epochs, and alpha
    part = lambda s, **kw: {"seconds": s, "peak_rss_mb": 1.0, **kw}  # noqa: E731
    # a 10-epoch run: 20 s fixed + 10 x 8 s; the quick evaluation 3 s a setting; the reference 7 s once; T3 7 s
    row = {"features": part(1.0), "head": part(2.0), "calibration": part(4.0, again=3.0), "graddiff": part(100.0, seconds_fixed=20.0),
           "npo": part(100.0, seconds_fixed=20.0), "selection": part(3.0, reference_seconds=7.0)}
    lines = bench.compare_table({"1m": row}, {}, {"settings": 66})
    want = sum(20.0 + 8.0 * e for e in epochs) + 3.0 * len(epochs) + 7.0
    cells = [c.strip() for c in lines[3].split("|")[1:-1]]
    # another head: its training and the grid alone (the calibration's forward passes are read back)
    assert cells[1] == "7" and cells[2] == "5" and cells[3] == f"{want:,.0f}" and cells[5] == f"{7.0 / want:.3f}"


def test_render_writes_the_tables_again_from_cost_json_or_says_what_is_missing(bench, tmp_path, capsys):
    import json

    part = lambda s, **kw: {"seconds": s, "wall": s, "peak_rss_mb": 1.0, **kw}  # noqa: E731
    row = {"features": part(1.0), "head": part(2.0), "calibration": part(4.0, again=3.0, again_wall=3.0),
           "graddiff": part(100.0, seconds_fixed=20.0), "npo": part(100.0, seconds_fixed=20.0),
           "selection": part(3.0, reference_seconds=7.0, reference_wall=7.0)}
    (tmp_path / "cost.json").write_text(json.dumps({"threads": 1, "sizes": {"1m": {"parts": row}}, "facts": {"settings": 66},
                                                    "model": {}}))
    assert bench.main(["--render", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "cost.md").read_text()
    assert "As `compare` runs them" in md and "| 1m (1.0M) | 7 | 5 |" in md
    with pytest.raises(SystemExit):
        bench.main(["--render", "--out", str(tmp_path / "nowhere")])
    assert "cost.json, which does not exist" in capsys.readouterr().err
