"""``t3unlearn compare`` end to end on a tiny world with random models; selection; config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_models(tiny_world, random_lm, tmp_path_factory):
    model, tok = random_lm
    root = tmp_path_factory.mktemp("cmp_models")
    for name in ("full", "retain"):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return tiny_world, root


FAST = {
    "eval": {"batch_size": 32, "max_new_tokens": 4},
    "train": {"epochs": 1, "batch_size": 16, "grad_accum": 1},
    "isolate": False,
    "methods": {
        "graddiff": {"params": {}, "train": {"lr": 1e-4}, "sweep": [{"lr": 1e-4}, {"lr": 1e-3}]},
        "uld": {"params": {"alpha": 1.0}, "train": {"lr": 1e-3}, "sweep": []},
        "t3": {"params": {"temperature": 2.5, "hidden_size": 4, "epochs": 2, "batch_size": 8}, "sweep": []},
        "cg": {"params": {"temperature": 1.0, "hidden_size": 4, "epochs": 2, "batch_size": 8}, "sweep": []},
    },
}


def _fast_config(tmp_path, **changes):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({**FAST, **changes}))
    return path


def test_compare_end_to_end_and_resume(tiny_models, tmp_path, monkeypatch, capsys):
    from t3unlearn.experiments.compare import doc_markers, select_setting, units
    from t3unlearn.experiments.compare.config import Selection
    from t3unlearn.commands.main import main

    world, models = tiny_models
    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    cfg = _fast_config(tmp_path)
    argv = ["compare", "--world", str(world), "--model", str(models / "full"), "--oracle", str(models / "retain"),
            "--pretrained", str(models / "retain"), "--methods", "graddiff,uld", "--seeds", "1", "--config", str(cfg),
            "--out", str(tmp_path / "cmp"), "--quiet", "--doc", str(tmp_path / "comparison.md")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| GradDiff |" in out and "| ULD |" in out and "wall time (s)" in out
    assert f"### world {world.name} forget10: 1 seed(s) per method" in out  # the world it ran on, not "world"
    rep = json.loads((tmp_path / "cmp" / "forget10" / "compare.json").read_text())
    assert [r["method"] for r in rep["rows"]] == ["full", "graddiff", "uld"]
    gd = rep["rows"][1]
    assert gd["seeds"] == [0] and gd["forget_quality"][0] is not None and gd["trainable_params"] > 0
    assert gd["wall_seconds"][0] > 0 and gd["peak_rss_mb"][0] > 0
    sweep = rep["sweeps"]["graddiff"]
    assert [s["setting"] for s in sweep] == ["lr=0.0001", "lr=0.001"]
    assert set(sweep[0]["summary"]) == {"forget_Q_A_Prob", "retain_Q_A_Prob", "forget_calibration_ks",
                                        "forget_calibration_mia", "forget_reference_tr_ks"}  # quick evaluation
    assert all(0 < s["summary"]["forget_calibration_ks"] <= 1 for s in sweep)  # forget vs the world's never-seen authors
    # T3's objective: forget truth ratios vs the reference's -- the full model's own on the world's calibration
    # authors, whose items carry perturbed answers (computed once, cached among the artifacts)
    assert all(0 < s["summary"]["forget_reference_tr_ks"] <= 1 for s in sweep)
    refs = list((tmp_path / "cmp" / "forget10" / "artifacts").glob("reference-truth-ratios-*/truth_ratios.json"))
    assert len(refs) == 1
    from t3unlearn.data import load_qa
    from t3unlearn.eval.runner import load_eval_data, truth_ratios
    from t3unlearn.lm import load_lm
    from t3unlearn.t3.calibrate import ks_distance

    full_lm = load_lm(str(models / "full"))
    ref = json.loads(refs[0].read_text())
    assert ref == pytest.approx(truth_ratios(full_lm, load_qa(f"{world}:calibration", what="calibration")))
    forget_tr = truth_ratios(full_lm, load_eval_data(str(world), "forget10")["forget"])
    assert all(0 <= s["summary"]["forget_calibration_mia"] <= 1 for s in sweep)
    # the chosen setting is the rule's choice on the recorded sweep, and the row runs it
    full_quick = json.loads(next((tmp_path / "cmp" / "forget10" / "runs" / "full").glob("*-quick/record.json")).read_text())
    assert full_quick["summary"]["forget_reference_tr_ks"] == pytest.approx(ks_distance(forget_tr, ref))
    expect = select_setting(sweep, full_quick["summary"]["retain_Q_A_Prob"], Selection())
    assert rep["chosen"]["graddiff"] == expect and gd["setting"] == sweep[expect]["setting"]
    assert "uld" not in rep["sweeps"]  # one setting: no sweep
    assert (tmp_path / "cmp" / "forget10" / "fq_vs_mu_forget10.png").stat().st_size > 1000
    doc = (tmp_path / "comparison.md").read_text()
    assert doc_markers("forget10")[0] in doc and "t3unlearn compare" in doc and "comparison_forget10.png" in doc
    assert (tmp_path / "comparison_forget10.png").is_file()
    # the fine-tuned weights were only kept between the sweep and the evaluation
    arts = tmp_path / "cmp" / "forget10" / "artifacts"
    assert list(arts.glob("graddiff-*/cost.json")) and not list(arts.glob("graddiff-*/model.safetensors"))

    # a rerun resumes from the cached records: nothing is executed again
    def boom(spec):
        raise AssertionError(f"re-ran {spec.method}")

    monkeypatch.setattr(units, "execute_unit", boom)
    assert main(argv) == 0


def test_calibrated_t3_and_guidance_choose_per_seed(tiny_models, tmp_path, monkeypatch):
    """"calibrate": true: each seed's head picks T and s with calibrate's rule on the calibration set (classifier
    guidance among T = 1 settings only); the row names each seed's choice, the model evaluated runs it, and the
    calibration's time is part of the unlearning time."""
    from t3unlearn.experiments.compare import compare
    from t3unlearn.t3.calibrate import DEFAULT_SCALES, DEFAULT_TEMPERATURES

    world, models = tiny_models
    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    cal = {"calibrate": True}
    # T3's head an ensemble of two (compare passes "ensemble" on to unlearn); classifier guidance's a single one
    cfg = _fast_config(tmp_path, methods={"t3": {"params": {**FAST["methods"]["t3"]["params"], **cal, "ensemble": 2}, "sweep": []},
                                          "cg": {"params": {**FAST["methods"]["cg"]["params"], **cal}, "sweep": []}})
    rep = compare(methods=["t3", "cg"], seeds=1, out=tmp_path / "cmp", world=str(world), model=str(models / "full"),
                  retain_model=str(models / "retain"), config=cfg, progress=False)
    rows = {r["method"]: r for r in rep["rows"]}
    runs = tmp_path / "cmp" / "forget10" / "runs"
    for m in ("t3", "cg"):
        recs = sorted((json.loads(p.read_text()) for p in (runs / m).glob("*/record.json")), key=lambda r: r["seed"])
        chosen = [r["cost"]["calibration"]["chosen"] for r in recs]
        assert rows[m]["setting"] == "calibrated: " + " / ".join(chosen) and len(chosen) == 1
        for r in recs:
            table = json.loads(next(Path(r["cost"]["artifact"]).parent.glob(
                f"{Path(r['cost']['artifact']).name}-{m}-calibration-*/calibration.json")).read_text())
            assert table["chosen"]["label"] == r["cost"]["calibration"]["chosen"]
            # the world's calibration authors carry perturbed answers: the base's truth ratios on them are the reference
            assert table["reference_source"] == "calibration" and table["chosen"]["tr_ks"] is not None
            temps = {row["setting"]["temperature"] for row in table["rows"]}
            assert temps == ({1.0} if m == "cg" else set(DEFAULT_TEMPERATURES))
            # whole words and plain tokens; the plain settings left unscored when none of them could be chosen
            assert len(table["rows"]) + table["unscored"] == 2 * (len(DEFAULT_SCALES) if m == "cg" else
                                                                  len(DEFAULT_SCALES) * len(DEFAULT_TEMPERATURES))
            assert r["cost"]["wall_seconds"] > r["cost"]["calibration"]["seconds"] > 0
            head_cfg = json.loads((Path(r["cost"]["artifact"]) / "t3_config.json").read_text())
            assert head_cfg["head_hidden"] == (8 if m == "t3" else 4)


def test_calibration_options_grid_and_reference_model(tiny_models, tmp_path, monkeypatch):
    """"calibrate": {...}: calibrate's grid, tolerances and --pretrained from the config. "pretrained" is resolved
    at the edge (here compare's pretrained=); the forget truth ratios (the benchmark's paraphrased and perturbed
    forget answers) are compared with the base's on the calibration items, which carry perturbed answers on the
    world (that model is the reference where they do not). Classifier guidance keeps the grid's T = 1 settings."""
    from t3unlearn.experiments.compare import compare

    world, models = tiny_models
    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    cal = {"calibrate": {"temperatures": [1.5, 3], "scales": [0.5, 1], "biases": [0, 1], "supports": [None], "tails": [-16],
                         "mia_tolerance": 0.5, "tolerance": 0.5, "reference_model": "pretrained"}}
    # T3's head an ensemble of two (compare passes "ensemble" on to unlearn); classifier guidance's a single one
    cfg = _fast_config(tmp_path, methods={"t3": {"params": {**FAST["methods"]["t3"]["params"], **cal, "ensemble": 2}, "sweep": []},
                                          "cg": {"params": {**FAST["methods"]["cg"]["params"], **cal}, "sweep": []}})
    logs = []
    compare(methods=["t3", "cg"], seeds=1, out=tmp_path / "cmp", world=str(world), model=str(models / "full"),
            retain_model=str(models / "retain"), pretrained=str(models / "retain"), config=cfg, progress=False,
            log=logs.append)
    assert any(line.startswith("calibration reference model (pretrained): ") and line.endswith("retain") for line in logs)
    runs = tmp_path / "cmp" / "forget10" / "runs"
    for m, n_rows, temps in (("t3", 16, {1.5, 3.0}), ("cg", 8, {1.0})):  # x whole words / plain tokens
        rec = json.loads(next((runs / m).glob("*/record.json")).read_text())
        art = Path(rec["cost"]["artifact"])
        table = json.loads(next(art.parent.glob(f"{art.name}-{m}-calibration-*/calibration.json")).read_text())
        assert len(table["rows"]) + table["unscored"] == n_rows
        assert {r["setting"]["temperature"] for r in table["rows"]} == temps
        assert {r["setting"]["bias"] for r in table["rows"]} == {0.0, 1.0}
        assert {r["setting"]["tail_logp"] for r in table["rows"]} == ({None} if m == "cg" else {-16.0})  # moot at T = 1
        assert (table["tolerance"], table["mia_tolerance"]) == (0.5, 0.5)
        assert table["objective"].startswith("KS distance between the forget truth ratios")
        # the world's calibration items carry perturbed answers, so they, not the pretrained model, are the reference
        assert table["reference_source"] == "calibration"
        assert all(r["tr_ks"] is not None for r in table["rows"] if r["feasible"])
        feasible = [r for r in table["rows"] if r["feasible"]]
        closest = min(r["tr_ks"] for r in feasible)
        whole = min((r["tr_ks"] for r in feasible if r["setting"]["spelling"] == "base"), default=None)
        want = whole if whole is not None and whole <= closest + table["ks_resolution"] else closest
        assert table["chosen"]["tr_ks"] == want
        assert rec["cost"]["calibration"]["chosen"] == table["chosen"]["label"]


def test_calibration_options_are_checked():
    from t3unlearn.experiments.compare.config import calibration_options
    from t3unlearn.errors import ConfigError

    assert calibration_options(True) == {} and calibration_options(False) is None
    assert calibration_options({"scales": [1], "supports": [None, 0.95]}) == {"scales": [1.0], "supports": [None, 0.95]}
    # the head's floor reaches the grid each seed is calibrated on (and its label, hence the cache key)
    from t3unlearn.experiments.compare.config import calibration_rule

    rule, settings = calibration_rule("t3", {"temperatures": [2], "scales": [1], "floors": [None, -3.5]})
    assert [st.floor for st in settings] == [None, None, -3.5, -3.5]  # each with whole words, then plain tokens
    assert rule["settings"][2].endswith("floor=-3.5, pieces=10, spelling=base") and rule["settings"][3].endswith("floor=-3.5")
    rule, settings = calibration_rule("t3", {"temperatures": [2], "scales": [1], "spellings": ["guided", "base"]})
    assert [st.spelling for st in settings] == ["guided", "base"] and rule["settings"][1].endswith("spelling=base")
    for bad, msg in (("yes", "must be true, false or an object"), ({"scale": [1]}, "scale"),
                     ({"temperatures": [0]}, "calibrate.temperatures: temperature must be > 0"),
                     ({"scales": []}, "non-empty list"), ({"scales": [-1]}, "calibrate.scales: scale must be >= 0"),
                     ({"scales": ["1"]}, "must list numbers"), ({"temperings": ["cubic"]}, "global, adaptive"),
                     ({"spellings": ["bass"]}, "guided, base"),
                     ({"supports": [1.5]}, "support is a quantile .* or null to turn it off"),
                     ({"tails": [2]}, "tail_logp is a log-probability and must be < 0"),
                     ({"floors": [0.5]}, "floor is a head logit"),
                     ({"mia_tolerance": 0.7}, "mia_tolerance must be a number in [0, 0.5]"),
                     ({"tolerance": 1}, "tolerance must be a number in [0, 1)"), ({"reference_model": 3}, "pretrained")):
        with pytest.raises(ConfigError, match=msg.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            calibration_options(bad)


def test_selection_rule_ignores_forget_quality():
    from t3unlearn.experiments.compare import select_setting
    from t3unlearn.experiments.compare.config import Selection

    def rec(fprob, mu, fq):
        return {"summary": {"forget_Q_A_Prob": fprob, "retain_Q_A_Prob": mu, "forget_quality": fq}}

    sel = Selection(metric="forget_Q_A_Prob", utility_metric="retain_Q_A_Prob", utility_tolerance=0.05, mia_metric=None)
    recs = [rec(0.5, 0.60, 1e-3), rec(0.1, 0.575, 1e-9), rec(0.01, 0.56, 0.9)]
    assert select_setting(recs, 0.60, sel) == 1  # lowest forget prob keeping 95 % of the full utility (0.57)
    assert select_setting([rec(0.1, 0.3, 0.5), rec(0.2, 0.4, 0.1)], 0.60, sel) == 1  # none in band: best utility


def test_selection_keeps_the_membership_auc_near_one_half():
    """The default rule is calibrate's with T3's reference and tolerances: lowest truth-ratio KS to the pretrained
    checkpoint's among settings that keep 97 % of the full model's retain probability and whose forget-vs-calibration
    min-k AUC is within 0.5 ± mia_tolerance; none feasible: the one missing the constraints by least."""
    from t3unlearn.experiments.compare import select_setting
    from t3unlearn.experiments.compare.config import Selection
    from t3unlearn.t3.calibrate import MIA_TOLERANCE, RETAIN_TOLERANCE

    def rec(ks, mu, mia):
        return {"summary": {"forget_reference_tr_ks": ks, "retain_Q_A_Prob": mu, "forget_calibration_mia": mia}}

    sel = Selection()
    assert (sel.metric, sel.reference_model) == ("forget_reference_tr_ks", "pretrained")
    assert (sel.mia_metric, sel.mia_tolerance, sel.utility_tolerance) == ("forget_calibration_mia", MIA_TOLERANCE, RETAIN_TOLERANCE)
    assert select_setting([rec(0.1, 0.48, 0.5), rec(0.3, 0.49, 0.5)], 0.5, sel) == 1  # relative: 0.97 x 0.5, not 0.5 - 0.03
    recs = [rec(0.05, 0.99, 0.70), rec(0.20, 0.99, 0.56), rec(0.10, 0.99, 0.45), rec(0.01, 0.80, 0.50)]
    assert select_setting(recs, 1.0, sel) == 2  # 0: AUC out of the band, 3: utility lost; 2 beats 1 on KS
    assert select_setting(recs, 1.0, Selection(mia_metric=None)) == 0  # without the constraint: lowest KS
    assert select_setting(recs, 1.0, Selection(mia_tolerance=0.2)) == 0
    # nothing feasible: the smallest miss (AUC 0.62 misses by 0.045, utility 0.9 by 0.07)
    none_ok = [rec(0.01, 0.99, 0.75), rec(0.3, 0.99, 0.62), rec(0.2, 0.90, 0.5)]
    assert select_setting(none_ok, 1.0, sel) == 1
    # ... and the sweep table says so beside the tick; a sweep with a feasible setting gets the plain tick
    from t3unlearn.experiments.compare.report import sweep_table

    def sweep(rs):
        return [{"setting": f"lr={i}", "summary": r["summary"]} for i, r in enumerate(rs)]

    table = sweep_table({"npo": sweep(none_ok), "graddiff": sweep(recs)}, {"npo": 1, "graddiff": 2}, sel, 1.0)
    rows = {line.split("|")[2].strip() + line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert "✓ none feasible" in rows["lr=1NPO"] and "✓" in rows["lr=2GradDiff"]
    assert "none feasible" not in rows["lr=2GradDiff"] and "✓" not in rows["lr=0NPO"]


def test_config_override_and_validation(tmp_path):
    from t3unlearn.experiments.compare import load_compare_config
    from t3unlearn.errors import ConfigError

    user = tmp_path / "c.json"
    user.write_text(json.dumps({"methods": {"npo": {"params": {"beta": 0.2}, "train": {"lr": 1e-3}, "sweep": [{"lr": 1e-4}, {"beta": 0.5}]}}}))
    cfg = load_compare_config(user)
    s = cfg.settings("npo")
    assert s[0].train["lr"] == 1e-4 and s[0].params["beta"] == 0.2
    assert s[1].train["lr"] == 1e-3 and s[1].params["beta"] == 0.5
    assert s[0].train["epochs"] == cfg.train["epochs"]
    assert len(cfg.settings("graddiff")) == 8  # untouched methods keep their defaults
    # every fine-tuning method and ULD is tuned on at least 6 settings by default, learning rate x epochs among them
    default = load_compare_config()
    for m in ("uld", "gradascent", "graddiff", "npo", "simnpo", "idkdpo", "rmu"):
        labels = [st.label for st in default.settings(m)]
        assert len(set(labels)) == len(labels) >= 6, m
    assert {(st.train["lr"], st.train["epochs"]) for st in default.settings("npo")} >= {
        (lr, ep) for lr in (1e-4, 3e-4, 1e-3) for ep in (5, 10)}
    # T3 and cg train the packaged recipe (unlearn's defaults), not a copy of it kept in the comparison's config
    from t3unlearn.experiments.compare.config import T3_HEAD_KEYS

    assert not set(default.settings("t3")[0].params) & set(T3_HEAD_KEYS)
    assert not set(default.settings("cg")[0].params) & set(T3_HEAD_KEYS)
    # a list of values stands for each value, every combination in order
    user.write_text(json.dumps({"methods": {"npo": {"sweep": [{"lr": [1e-4, 3e-4], "epochs": [5, 10]}, {"beta": 0.5}]}}}))
    s = load_compare_config(user).settings("npo")
    assert [st.label for st in s] == ["lr=0.0001, epochs=5", "lr=0.0001, epochs=10", "lr=0.0003, epochs=5",
                                      "lr=0.0003, epochs=10", "beta=0.5"]
    assert s[3].train["lr"] == 3e-4 and s[3].train["epochs"] == 10 and s[4].params["beta"] == 0.5
    bad = [
        ({"methods": {"sgd": {}}}, "unknown method 'sgd'"),
        ({"selection": {"metric": "forget_quality"}}, "peek at the oracle"),
        ({"selection": {"utility_tolerence": 0.1}}, "unknown key 'utility_tolerence' .did you mean 'utility_tolerance'"),
        ({"selection": {"utility_tolerance": "0.1"}}, "utility_tolerance must be a number"),
        ({"selection": {"metric": "model_utility"}}, "not computed by the 'quick' evaluation"),
        ({"selection": {"mia_metric": "privleak"}}, "peek at the oracle"),
        ({"selection": {"mia_tolerance": 0.6}}, "mia_tolerance is a distance from AUC 0.5"),
        ({"methods": {"t3": {"params": {"calibrate": "yes"}}}}, "calibrate must be"),
        ({"retain_subset": 0}, "retain_subset must be"),
        ({"trheads": 1}, "unknown key 'trheads' .did you mean 'threads'"),
        ({"train": {"learning_rate": 1e-4}}, "unknown key 'learning_rate'"),
        ({"methods": {"npo": {"params": {"betta": 1}}}}, r"methods.npo.params: unknown key 'betta' .did you mean 'beta'"),
        ({"methods": {"npo": {"sweep": [{"lrr": 1e-4}]}}}, r"methods.npo.sweep\[0\]: unknown key 'lrr'"),
        ({"methods": {"t3": {"params": {"temprature": 2.0}}}}, "unknown key 'temprature' .did you mean 'temperature'"),
        ({"methods": {"npo": {"train": {"lr": -1}}}}, "lr must be > 0"),
        ({"eval": {"batch_size": 0}}, "must be >= 1"),
        ({"selection": {"utility_tolerance": 1.0}}, "utility_tolerance is relative"),
        ({"selection": {"reference_model": None}}, "forget_reference_tr_ks needs selection.reference_model"),
        ({"methods": {"npo": {"sweep": [{"lr": []}]}}}, r"methods.npo.sweep\[0\]: a list of values must not be empty"),
    ]
    for body, message in bad:
        user.write_text(json.dumps(body))
        with pytest.raises(ConfigError, match=message):
            load_compare_config(user)


def test_a_method_parameter_of_the_wrong_type_is_refused_when_the_config_is_read():
    from t3unlearn.experiments.compare import load_compare_config
    from t3unlearn.errors import ConfigError

    # before, NPO's beta "x" passed and the run crashed with a traceback after every earlier unit
    with pytest.raises(ConfigError, match=r"methods.npo \(beta=x\): beta must be a number"):
        load_compare_config({"methods": {"npo": {"sweep": [{"beta": "x"}]}}})
    with pytest.raises(ConfigError, match="steering_coeff must be a number"):
        load_compare_config({"methods": {"rmu": {"params": {"steering_coeff": True}}}})
    assert load_compare_config({"methods": {"rmu": {"params": {"layer": 2}}}}).settings("rmu")[0].params["layer"] == 2


def test_compare_user_errors(tmp_path):
    from t3unlearn.commands.main import main

    assert main(["compare", "--methods", "t3,sgd", "--out", str(tmp_path)]) == 2
    assert main(["compare", "--split", "forget07x", "--out", str(tmp_path)]) == 2


def test_compare_refuses_a_bad_out_or_doc_before_any_run(tmp_path, monkeypatch, capsys):
    import t3unlearn.experiments.compare as cmp
    from t3unlearn.commands.main import main
    from t3unlearn.experiments.compare.report import doc_markers, write_doc

    monkeypatch.setattr(cmp, "compare", lambda *a, **k: pytest.fail("compare ran despite a bad --out/--doc"))
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main(["compare", "--methods", "t3", "--seeds", "1", "--out", str(afile)]) == 2
    assert "--out" in capsys.readouterr().err and afile.read_text() == "mine"
    assert main(["compare", "--methods", "t3", "--out", str(tmp_path / "o"), "--doc", str(tmp_path)]) == 2
    assert "--doc" in capsys.readouterr().err
    # a begin marker without its end: appending would leave two begin markers, and the next run would replace
    # from the stray one, deleting the user's text after it; refused before any run and at write time
    begin = doc_markers("forget10")[0]
    half = tmp_path / "half.md"
    half.write_text(f"# mine\n{begin}\nmy text\n")
    assert main(["compare", "--methods", "t3", "--out", str(tmp_path / "o"), "--doc", str(half)]) == 2
    assert "marker" in capsys.readouterr().err
    png = tmp_path / "p.png"
    png.write_bytes(b"png")
    with pytest.raises(ValueError, match="marker"):
        write_doc(half, [{"split": "forget10", "plot": str(png), "markdown": "T"}], "cmd")
    assert half.read_text() == f"# mine\n{begin}\nmy text\n" and not (tmp_path / "o").exists()


def test_help_teaches(capsys):
    from t3unlearn.commands.main import main

    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "--seeds" in text and "selection" in text
    assert main(["compare", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["methods"]["t3"]


def test_doc_keeps_world_and_tofu_sections_of_the_same_split_apart(tmp_path):
    from t3unlearn.experiments.compare.report import doc_markers, write_doc

    doc = tmp_path / "cmp.md"
    for bench, text in (("world", "WORLD TABLE"), ("tofu", "TOFU TABLE"), ("world", "WORLD TABLE 2")):
        png = tmp_path / f"{bench}.png"
        png.write_bytes(b"png")
        write_doc(doc, [{"split": "forget10", "benchmark": bench, "plot": str(png), "markdown": text}], f"cmd {bench}")
    out = doc.read_text()
    assert "WORLD TABLE 2" in out and "TOFU TABLE" in out and "WORLD TABLE\n" not in out  # replaced, not appended
    assert out.count(doc_markers("forget10")[0]) == 1 and out.count(doc_markers("forget10", "tofu")[0]) == 1
    assert (tmp_path / "comparison_forget10.png").is_file() and (tmp_path / "comparison_tofu_forget10.png").is_file()


def test_compare_hands_the_loading_options_to_every_unit(tiny_models, tmp_path, monkeypatch):
    """compare's loading options travel in each unit's spec (JSON, as to an isolated unit's process), reach
    from_pretrained for the model to unlearn, and are part of the units' cache keys (other options, other runs)."""
    from transformers import AutoModelForCausalLM

    from t3unlearn.experiments.compare import driver
    from t3unlearn.experiments.compare.units import UnitSpec
    from t3unlearn.commands.main import main

    world, models = tiny_models
    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    cfg = _fast_config(tmp_path, methods={"graddiff": {"params": {}, "train": {"lr": 1e-4}, "sweep": []}})
    seen, specs = [], []
    real_model = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda path, **kw: seen.append((Path(path).name, kw)) or real_model(path, **kw))
    real_run = driver.run_unit
    monkeypatch.setattr(driver, "run_unit", lambda spec, **kw: specs.append(spec) or real_run(spec, **kw))
    argv = ["compare", "--world", str(world), "--model", str(models / "full"), "--oracle", str(models / "retain"),
            "--methods", "graddiff", "--seeds", "1", "--config", str(cfg), "--out", str(tmp_path / "cmp"), "--quiet"]
    assert main([*argv, "--dtype", "float32", "--attn-implementation", "eager"]) == 0
    loading = {"dtype": "float32", "attn_implementation": "eager"}
    assert [s.method for s in specs] == ["full", "graddiff"]
    assert all(UnitSpec.from_json(s.to_json()).loading == loading for s in specs)
    assert [kw for name, kw in seen if name == "full"] == [loading, loading]  # the full model's row; graddiff's start
    # without the options the units are other runs (their records are not reused)
    records = {s.method: json.loads((Path(s.unit_dir) / "record.json").read_text()) for s in specs}
    with_options = {s.unit_dir for s in specs}
    specs.clear()
    monkeypatch.setattr(driver, "run_unit", lambda spec, **kw: specs.append(spec) or records[spec.method])
    assert main(argv) == 0
    assert [s.loading for s in specs] == [{}, {}] and not with_options & {s.unit_dir for s in specs}


def test_a_reused_head_without_a_word_piece_table_takes_a_calibrated_piece_setting(random_lm, tmp_path):
    """compare reuses head artifacts across runs: one saved before word-piece tables gets its tokenizer's table (the one
    training makes), so a cached calibration's choice with the piece exemption can be set on it (probes added later)."""
    import torch
    from safetensors.torch import load_file, save_file

    from t3unlearn.errors import ModelError
    from t3unlearn.experiments.compare.units import attach_head
    from t3unlearn.t3.head import GuidanceHead, word_pieces
    from t3unlearn.t3.model import T3Config, T3ForCausalLM

    base, tok = random_lm
    head = GuidanceHead(base.config.hidden_size, 4, base.config.vocab_size).set_pieces(word_pieces(tok, base.config.vocab_size))
    T3ForCausalLM(T3Config(), base, head).save_pretrained(tmp_path / "head")
    state = load_file(tmp_path / "head" / "head.safetensors")
    save_file({k: v for k, v in state.items() if k != "pieces"}, tmp_path / "head" / "head.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError, match="word-piece table"):
        T3ForCausalLM.from_base(base, tmp_path / "head", piece_floor=10.0)
    model = attach_head(base, tmp_path / "head", tok, {"temperature": 2.0, "piece_floor": 10.0, "spelling": "base"})
    assert torch.equal(model.head.piece_mask(), word_pieces(tok, base.config.vocab_size))
    assert model.guidance.piece_floor == 10.0 and model.guidance.temperature == 2.0 and model.guidance.spelling == "base"
    assert attach_head(base, tmp_path / "head", tok, {"piece_floor": None}).guidance.piece_floor is None


def test_an_interrupted_unit_process_gets_to_clean_up(tmp_path):
    """Ctrl+C / SIGTERM on compare: its unit's process is interrupted and may remove its temporaries (before, the
    parent's subprocess.run SIGKILLed it and a SIGTERM killed the parent outright: a temporary stayed behind)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from t3unlearn.commands.baselines import _term_as_interrupt
    from t3unlearn.workers import stop_process

    tmp = tmp_path / ".unit.tmp"
    child = ("import pathlib, shutil, signal, sys, time\np = pathlib.Path(sys.argv[1]); p.mkdir()\n"  # ready only inside try:
             "signal.signal(signal.SIGINT, signal.default_int_handler)\n"  # as a unit does (SIGINT is ignored in CI)
             "try:\n    print('ready', flush=True); time.sleep(60)\nexcept KeyboardInterrupt:\n    time.sleep(0.5); shutil.rmtree(p)\n")
    proc = subprocess.Popen([sys.executable, "-c", child, str(tmp)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready" and tmp.is_dir()
    stop_process(proc)
    assert not tmp.exists() and proc.returncode is not None
    before = signal.getsignal(signal.SIGTERM)
    restore = _term_as_interrupt()
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) == before
