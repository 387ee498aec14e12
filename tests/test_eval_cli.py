"""``t3unlearn eval`` and ``t3unlearn report`` end to end on a fake benchmark and the random model."""

import json

import pytest

from t3unlearn.commands.main import main
from t3unlearn.eval.results import EvalResults

from test_eval_runner import build_fake_benchmark


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_threads():
    """``t3unlearn eval`` may set torch's thread count (--threads auto); keep other tests unaffected."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def saved_model(random_lm, tmp_path_factory):
    model, tok = random_lm
    d = tmp_path_factory.mktemp("random_model")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def runs(saved_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    world = build_fake_benchmark(tmp_path_factory.mktemp("fake_world_cli"))
    common = ["--model", str(saved_model), "--benchmark", "world", "--world", str(world), "--batch-size", "8", "--max-new-tokens", "5", "--quiet"]
    # a "retain" run without a reference, then a run against it
    assert main(["eval", *common, "--oracle-results", str(_seed_reference(root)), "--name", "retain90", "--out", str(root / "retain90")]) == 0
    assert main(["eval", *common, "--oracle-results", str(root / "retain90"), "--name", "full", "--out", str(root / "full")]) == 0
    return root


def _seed_reference(root):
    f = root / "seed" / "TOFU_EVAL.json"
    f.parent.mkdir()
    f.write_text(json.dumps({"forget_truth_ratio": {"agg_value": 0.5, "value_by_index": {str(i): {"score": 0.2 * (i + 1)} for i in range(4)}}, "mia_min_k": {"agg_value": 0.5, "auc": 0.5}}))
    return f


def test_eval_writes_the_three_files_and_prints_the_report(runs, capsys):
    for name in ("retain90", "full"):
        for f in ("TOFU_EVAL.json", "TOFU_SUMMARY.json", "run_info.json"):
            assert (runs / name / f).is_file()
    full = EvalResults.load(runs / "full")
    # the same model as its reference: forget quality 1, privleak 0
    assert full.agg("forget_quality") == pytest.approx(1.0)
    assert full.agg("privleak") == pytest.approx(0.0, abs=1e-6)
    assert full.info["retain_reference"]["source"] == str(runs / "retain90")
    assert full.info["name"] == "full" and full.info["head"] is None


def test_eval_cli_help_and_mistakes(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--oracle-results" in out and "forget_quality" in out
    assert main(["eval", "--model", "m", "--split", "forget7", "--out", str(tmp_path / "o")]) == 2
    assert "unknown split" in capsys.readouterr().err
    assert main(["eval", "--model", "m", "--oracle-results", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 2
    assert main(["eval", "--model", "m", "--threads", "zero", "--out", str(tmp_path / "o")]) == 2


def test_a_json_object_without_tofu_metrics_is_not_results(tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"accuracy": 0.9, "loss": 1.2}))  # summary-shaped, no TOFU metric
    assert main(["report", str(other), "--out", str(tmp_path / "r")]) == 2
    assert "not a TOFU results file" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert main(["eval", "--model", "m", "--oracle-results", str(other), "--out", str(tmp_path / "o")]) == 2
    assert "not a TOFU results file" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert EvalResults.load(_seed_reference(tmp_path)).agg("forget_truth_ratio") == 0.5  # partial TOFU files still load


def test_no_progress_also_silences_transformers_bars(saved_model, tmp_path, capfd, monkeypatch):
    """``--quiet`` (like ``--quiet``) hides the libraries' own bars too: transformers' "Loading weights"."""
    import transformers

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)  # restored after: --quiet sets it
    transformers.utils.logging.enable_progress_bar()
    try:
        (tmp_path / "w").mkdir()
        world = build_fake_benchmark(tmp_path / "w")
        args = ["eval", "--model", str(saved_model), "--benchmark", "world", "--world", str(world), "--oracle-results",
                "none", "--batch-size", "8", "--max-new-tokens", "2", "--threads", "1", "--out", str(tmp_path / "o")]
        capfd.readouterr()
        assert main([*args, "--quiet"]) == 0
        assert "Loading weights" not in capfd.readouterr().err
        transformers.utils.logging.enable_progress_bar()
        assert main([*args, "--out", str(tmp_path / "o2")]) == 0  # the bar is there without it (the test can fail)
        assert "Loading weights" in capfd.readouterr().err
    finally:
        transformers.utils.logging.enable_progress_bar()


def test_guidance_overrides_need_a_t3_model(saved_model, tmp_path, capsys):
    for flag in (["--tempering", "global"], ["--tail-logp", "-9"], ["--bias", "1"]):
        for cmd in ("eval", "probe"):
            assert main([cmd, "--model", str(saved_model), *flag, "--oracle-results" if cmd == "eval" else "--oracle",
                         "none", "--out", str(tmp_path / "o")]) == 2
            assert f"{flag[0]} is T3's guidance and needs a head" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_choose_threads(monkeypatch):
    import os

    from t3unlearn.io import choose_threads

    assert choose_threads("3") == (3, "--threads")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (5.0, 5.0, 5.0))
    assert choose_threads("auto")[0] == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 1.2, 1.2))
    assert choose_threads("auto")[0] == 1  # one core is taken: never oversubscribe
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert choose_threads("auto")[0] == 2
    assert choose_threads("0") == (None, "torch's default")


def test_torch_threads_restores():
    import torch

    from t3unlearn.io import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_progress_writes_lines_in_logs(monkeypatch, capsys):
    from t3unlearn import progress as P

    monkeypatch.setenv("T3UNLEARN_PROGRESS", "log")
    monkeypatch.setattr(P, "LOG_INTERVAL", 0.0)
    with P.progress(total=3, desc="work", unit="step") as bar:
        for _ in range(3):
            bar.update(1)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("work:")]
    assert len(lines) >= 2 and "3/3" in lines[-1]


def test_report_table_and_plot(runs, capsys):
    out = runs / "report"
    assert main(["report", str(runs / "full"), str(runs / "retain90"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| model | forget quality | model utility |" in text
    assert "| full |" in text and "| retain90 |" in text
    md = (out / "report.md").read_text()
    assert "## Model utility parts" in md and "RA ROUGE" in md
    png = (out / "fq_vs_mu.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_world_retain_reference_is_evaluated_once_and_cached(saved_model, tmp_path, monkeypatch, capsys):
    import shutil

    from t3unlearn.benchmarks import Benchmark

    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    retain_dir = tmp_path / "retain90"
    shutil.copytree(saved_model, retain_dir)
    monkeypatch.setattr(Benchmark, "model", lambda self, name, **kw: retain_dir)
    (tmp_path / "world_dir").mkdir()
    world = build_fake_benchmark(tmp_path / "world_dir")
    common = ["--benchmark", "world", "--world", str(world), "--max-new-tokens", "4", "--quiet"]
    # the retain model itself: its own reference (FQ 1), and its results go to the cache
    assert main(["eval", "--model", str(retain_dir), *common, "--out", str(tmp_path / "r")]) == 0
    assert EvalResults.load(tmp_path / "r").info["role"] == "retain"
    cached = list((tmp_path / "home" / "eval").glob("*/TOFU_EVAL.json"))
    assert len(cached) == 1
    # another model: the cached reference is used, not re-evaluated
    assert main(["eval", "--model", str(saved_model), *common, "--out", str(tmp_path / "m")]) == 0
    assert "cached results" in capsys.readouterr().err
    res = EvalResults.load(tmp_path / "m")
    assert res.agg("forget_quality") == pytest.approx(1.0)  # same weights as the retain model
    assert res.info["retain_reference"]["forget_quality_available"]


def test_tofu_from_a_local_copy_without_reference(saved_model, tmp_path, capsys, monkeypatch):
    """--benchmark tofu reads the local copy in $T3UNLEARN_TOFU_DIR; a model that is not one of the tiny TOFU
    models has no automatic reference, so forget quality and privleak are n/a, saying how to get them."""
    local = tmp_path / "tofu_copy"
    local.mkdir()
    build_fake_benchmark(local)
    monkeypatch.setenv("T3UNLEARN_TOFU_DIR", str(local))
    args = ["eval", "--model", str(saved_model), "--benchmark", "tofu", "--max-new-tokens", "3", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "forget quality and privleak: n/a" in out and "--oracle-results" in out
    res = EvalResults.load(tmp_path / "t")
    assert res.agg("forget_quality") is None and res.agg("privleak") is None
    assert res.info["benchmark"] == "tofu"


def test_matrix_products_do_not_depend_on_the_thread_count():
    """--threads auto follows the machine's load, so torch's BLAS must give the same bits for any thread
    count (importing t3unlearn turns on MKL's strict reproducibility, MKL_CBWR; a fresh process, as MKL reads
    it once)."""
    import subprocess
    import sys

    code = ("import t3unlearn, torch\n"
            "torch.manual_seed(0)\n"
            "a, b = torch.randn(640, 4096), torch.randn(4096, 64)\n"
            "out = []\n"
            "for n in (1, 2):\n"
            "    torch.set_num_threads(n)\n"
            "    out.append(a @ b)\n"
            "print(torch.equal(*out))\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "MKL_CBWR"}
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert got.stdout.strip() == "True"


def test_a_world_model_names_the_world_it_is_evaluated_on():
    """`eval --model world-tiny:full` evaluates on the tiny world without --world tiny (it used to score the tiny
    model on the default world's sets, silently); --world agrees with it or is refused; TOFU's is refused."""
    from argparse import Namespace

    from t3unlearn.commands.eval import _benchmark_of
    from t3unlearn.errors import T3Error

    def bench(model, world=None, benchmark="world"):
        return _benchmark_of(Namespace(model=model, world=world, benchmark=benchmark))

    assert bench("world-tiny:full").label == "world-tiny"
    assert bench("world:full").label == "world" and bench("path/to/model").label == "world"
    assert bench("world-tiny:full", world="tiny").label == "world-tiny"
    assert bench("path/to/model", world="tiny").label == "world-tiny"
    with pytest.raises(T3Error, match="is a model of world-tiny, not of --world default"):
        bench("world-tiny:full", world="default")
    with pytest.raises(T3Error, match="evaluate it with --benchmark world"):
        bench("world-tiny:full", benchmark="tofu")


def test_runs_are_labelled_by_model_and_head():
    """eval/probe label a run --name, else the benchmark model's name (world:full -> full) or the given default,
    with the head's directory after '+': a head over world:full is not labelled 'full' like the base."""
    from argparse import Namespace

    from t3unlearn.commands.eval import _run_name

    def name(model, head=None, given=None, default=None):
        return _run_name(Namespace(model=model, head=head, name=given), default=default)

    assert name("world:full") == "full" and name("world:full", head="runs/t3-head") == "full+t3-head"
    assert name("path/to/model") is None and name("path/to/model", head="h") is None  # load_lm names it
    assert name("path/to/model", head="runs/h", default="model") == "model+h"
    assert name("world:full", head="h", given="mine") == "mine"


def test_demo_refuses_an_out_that_is_a_file_before_any_work(tmp_path, monkeypatch, capsys):
    import t3unlearn.benchmarks as benchmarks

    monkeypatch.setattr(benchmarks, "get_benchmark", lambda *a, **k: pytest.fail("demo started work despite --out a file"))
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main(["demo", "--preset", "tiny", "--threads", "1", "--out", str(afile)]) == 2  # was a traceback after training
    assert "--out" in capsys.readouterr().err and afile.read_text() == "mine"
