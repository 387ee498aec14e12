"""The commands end to end on the tiny world, as a user runs them: killed with SIGKILL and rerun, the demo,
the baseline command, and results that do not depend on the torch thread count.

Kill -9 anywhere, lose nothing: each command runs as ``python -m t3unlearn ...``; when a chosen line of its
progress output appears it is killed with SIGKILL, wherever it then is. What a kill leaves must be whole or
absent: the rerun completes, reuses what was finished (a trained base model, cached features, the retain
reference, finished compare units) and every output and cache entry loads. One home (``T3UNLEARN_HOME``)
serves the whole module: the tiny world's models are trained by the ``world train`` test's runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes in /proc")]
SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = ["--world", "tiny"]


def _env(home: Path) -> dict:
    return dict(os.environ, T3UNLEARN_HOME=str(home), PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
                T3UNLEARN_PROGRESS="log", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def run(argv: list[str], home: Path, *, kill_at: str | None = None, at_kill=None, timeout: float = 900) -> str:
    """``python -m t3unlearn ARGV``; with ``kill_at``, SIGKILL it when a line containing that text appears (the
    line must appear) and, once it is dead, call ``at_kill()`` (its children die with it: a child that finishes
    a unit in the instant before the kill lands is a finished unit, not a leftover). Returns the output (stdout
    and stderr). Every process it started must be gone soon after."""
    proc = subprocess.Popen([sys.executable, "-m", "t3unlearn", *argv], env=_env(home), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines, killed, children = [], False, []
    try:
        for line in proc.stdout:
            lines.append(line)
            if kill_at is not None and kill_at in line:
                children = _children(proc.pid)
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
        proc.wait()
        if killed and at_kill is not None:
            at_kill()
    finally:
        timer.cancel()
    text = "".join(lines)
    if kill_at is not None:
        assert killed, f"{kill_at!r} never appeared:\n{text}"
        deadline = time.monotonic() + 30
        while not all(_gone(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(_gone(c) for c in children), "a child of the killed command outlived it"
    else:
        assert proc.returncode == 0, text
    return text


def strays(root: Path) -> list[str]:
    """Leftovers of interrupted atomic writes under ``root`` (a rerun removes a killed writer's)."""
    return [str(p) for p in root.rglob(".*") if p.name.endswith(".tmp") or ".old-" in p.name]


# --------------------------------------------------------------------------- world train


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A fresh home whose tiny-world models come from ``world train`` killed twice, then rerun."""
    home = tmp_path_factory.mktemp("e2e-home")
    argv = ["world", "train", *TINY, "--models", "full,retain90"]
    outputs = {
        "during pretraining": run(argv, home, kill_at="pretraining a"),
        "during fine-tuning": run(argv, home, kill_at="fine-tuning 'full'"),
        "rerun": run(argv, home),
    }
    home.joinpath("world-train-outputs.json").write_text(json.dumps(outputs))
    return home


def test_world_train_killed_then_rerun(home):
    out = json.loads((home / "world-train-outputs.json").read_text())
    assert "tokenizer:" in out["during pretraining"]
    assert "tokenizer:" not in out["during fine-tuning"]  # the tokenizer finished before the first kill: reused
    assert "pretraining a" in out["during fine-tuning"]
    rerun = out["rerun"]
    assert "pretraining a" not in rerun and "tokenizer:" not in rerun  # the base finished before the second kill
    assert "fine-tuning 'full'" in rerun and "fine-tuning 'retain90'" in rerun
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dirs = sorted(p.parent for p in (home / "models").rglob("train_info.json"))
    assert {d.name for d in dirs} == {"pretrained", "full", "retain90"}
    for d in dirs:
        AutoModelForCausalLM.from_pretrained(str(d))
        AutoTokenizer.from_pretrained(str(d))
        json.loads((d / "train_info.json").read_text())
    assert strays(home) == []


# --------------------------------------------------------------------------- unlearn


def test_unlearn_killed_then_rerun(home, tmp_path, monkeypatch):
    head = tmp_path / "head"
    argv = ["unlearn", "--model", "world-tiny:full", "--forget", "world-tiny:forget10", "--retain", "world-tiny:retain90",
            "--out", str(head), "--epochs", "30", "--hidden-size", "8", "--threads", "1"]
    run(argv, home, kill_at="features:  ")  # the first line of the feature extraction's progress
    assert not head.exists() or (head / "t3_config.json").is_file()
    run(argv, home, kill_at="head:  ")  # the head's training: the features are cached by then
    monkeypatch.setenv("T3UNLEARN_HOME", str(home))
    from t3unlearn.t3.feature_cache import load_part

    entries = [p for p in (home / "features").iterdir() if not p.name.startswith(".") and p.is_dir()]
    assert len(entries) == 2 and all(load_part(p.name) is not None for p in entries)  # forget and retain, each whole
    rerun = run(argv, home)
    assert "from cache" in rerun  # the finished feature extraction is reused
    from t3unlearn.t3.model import T3ForCausalLM

    T3ForCausalLM.from_pretrained(str(head))
    assert strays(home) == [] and strays(tmp_path) == []


def test_calibrate_command(home, tmp_path, monkeypatch, capsys):
    """``calibrate`` scores the whole grid (biases included), saves the chosen setting in the head and leaves the
    head's weights alone."""
    from t3unlearn.commands.main import main
    from t3unlearn.t3.model import T3ForCausalLM

    monkeypatch.setenv("T3UNLEARN_HOME", str(home))
    monkeypatch.setenv("T3UNLEARN_PROGRESS", "off")
    head, out = tmp_path / "head", tmp_path / "calibrated"
    data = ["--forget", "world-tiny:forget10", "--retain", "world-tiny:retain90"]
    assert main(["unlearn", "--model", "world-tiny:full", *data, "--out", str(head), "--epochs", "10",
                 "--hidden-size", "8", "--threads", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["calibrate", "--head", str(head), *data, "--out", str(out), "--temperatures", "1,2", "--scales",
                 "0.5,1", "--temperings", "adaptive", "--biases", "0,1.5", "--threads", "1", "--quiet",
                 "--oracle", "world-tiny:retain90"]) == 0
    text = capsys.readouterr().out
    assert text.count("bias=1.5") >= 4 and "16 settings" in text  # 2 T x 2 s x 2 biases x whole words / plain tokens
    chosen = text.split("chosen: ")[1].splitlines()[0].strip()
    calibrated = T3ForCausalLM.from_pretrained(str(out))
    assert calibrated.guidance.label() == chosen
    # --oracle: two more columns and the oracle's pick, recorded beside the choice (which it does not make)
    assert "FQ(oracle)" in text and f"oracle check (never used to choose): chosen {chosen}:" in text
    record = calibrated.config.calibration
    assert record["oracle_model"] == "world-tiny:retain90" and record["perturbed"] == "world-tiny:forget10_perturbed"
    assert 0 <= record["oracle_best"]["forget_quality"] <= 1 and record["chosen"]["privleak"] is not None
    import torch

    before = T3ForCausalLM.from_pretrained(str(head))
    assert all(torch.equal(a, b) for a, b in zip(before.head.state_dict().values(), calibrated.head.state_dict().values()))
    assert main(["calibrate", "--head", str(head), *data, "--biases", "x", "--quiet"]) == 2
    assert "--biases: bias must be a number, not 'x'" in capsys.readouterr().err
    # without --forget/--retain: the head's recorded request and retain set, and the benchmark's holdout and
    # perturbed sets found from the request's recorded source
    again = tmp_path / "again"
    assert main(["calibrate", "--head", str(head), "--out", str(again), "--temperatures", "1,2", "--scales", "0.5,1",
                 "--temperings", "adaptive", "--biases", "0,1.5", "--threads", "1", "--quiet", "--oracle", "world-tiny:retain90"]) == 0
    assert capsys.readouterr().out.split("chosen: ")[1].splitlines()[0].strip() == chosen
    second = T3ForCausalLM.from_pretrained(str(again)).config.calibration
    assert second["items"] == record["items"] and second["requests"] == ["r1"]
    assert second["holdout"].endswith(":calibration") and second["perturbed"].endswith(":forget10_perturbed")
    # a head saved before word-piece tables: the default grid (its whole-word settings read the table) gives
    # it its tokenizer's, and says so; the grid without either leaves it without one
    import shutil

    from safetensors.torch import load_file, save_file

    old = tmp_path / "old-head"
    shutil.copytree(head, old)
    state = load_file(old / "head.safetensors")
    save_file({k: v for k, v in state.items() if k != "pieces"}, old / "head.safetensors", metadata={"format": "pt"})
    assert main(["calibrate", "--head", str(old), *data, "--out", str(tmp_path / "plain"), "--piece-floors", "none",
                 "--spellings", "guided", "--threads", "1", "--quiet"]) == 0
    assert "word-piece tables" not in capsys.readouterr().out
    assert T3ForCausalLM.from_pretrained(str(tmp_path / "plain")).head.pieces is None
    assert main(["calibrate", "--head", str(old), *data, "--out", str(tmp_path / "pieces"), "--threads", "1", "--quiet"]) == 0
    assert "the head was saved before word-piece tables" in capsys.readouterr().out
    with_table = T3ForCausalLM.from_pretrained(str(tmp_path / "pieces"))
    assert any(r["setting"]["piece_floor"] == 10.0 and r["setting"]["spelling"] == "base"
               for r in with_table.config.calibration["rows"])  # the whole-word settings were scored with the table
    assert torch.equal(with_table.head.pieces, before.head.pieces)


# --------------------------------------------------------------------------- eval


def test_eval_killed_then_rerun(home, tmp_path):
    out = tmp_path / "full"
    argv = ["eval", "--model", "world-tiny:full", "--benchmark", "world", *TINY, "--max-new-tokens", "8",
            "--threads", "1", "--out", str(out)]
    run(argv, home, kill_at="score:  ")  # scoring the model's answers
    assert not (out / "TOFU_EVAL.json").exists()
    run(argv, home, kill_at="evaluating on world-tiny forget10 once")  # the retain reference's evaluation
    assert not (out / "TOFU_EVAL.json").exists()
    run(argv, home)
    files = {name: json.loads((out / name).read_text()) for name in ("TOFU_EVAL.json", "TOFU_SUMMARY.json", "run_info.json")}
    assert files["TOFU_SUMMARY.json"]["forget_quality"] is not None
    again = run([*argv[:-1], str(tmp_path / "again")], home)
    assert "retain90: cached results" in again  # the finished reference is reused
    assert (tmp_path / "again" / "TOFU_EVAL.json").read_bytes() == (out / "TOFU_EVAL.json").read_bytes()
    from t3unlearn.eval.results import EvalResults

    for entry in (home / "eval").iterdir():
        if not entry.name.startswith("."):
            EvalResults.load(entry)
    assert strays(home) == [] and strays(tmp_path) == []


# --------------------------------------------------------------------------- compare


FAST_COMPARE = {
    "eval": {"batch_size": 32, "max_new_tokens": 8},
    "train": {"epochs": 1, "batch_size": 16, "grad_accum": 1},
    "methods": {
        "t3": {"params": {"temperature": 2.5, "hidden_size": 8, "epochs": 5}, "sweep": []},
        "cg": {"params": {"temperature": 1.0, "hidden_size": 8, "epochs": 5}, "sweep": []},
        "graddiff": {"params": {}, "train": {"lr": 1e-4, "epochs": 8}, "sweep": [{"lr": 1e-4}, {"lr": 1e-3}]},
    },
}


def test_compare_killed_then_rerun(home, tmp_path):
    """compare with T3 and classifier guidance, every unit in its own process, two at a time (--jobs 2): killed
    after a unit finished and while a unit trains, then rerun. T3 and CG share one head; each unit ran with at
    most cores/2 torch threads; finished units are reused; nothing a killed unit did is left."""
    cfg = tmp_path / "fast.json"
    cfg.write_text(json.dumps(FAST_COMPARE))
    out = tmp_path / "cmp"
    argv = ["compare", *TINY, "--methods", "t3,cg,graddiff", "--seeds", "1", "--config", str(cfg), "--out", str(out),
            "--jobs", "2"]
    runs = out / "forget10" / "runs"

    def records() -> list[dict]:
        return [json.loads(p.read_text()) for p in runs.glob("*/*/record.json")]

    at_kill = []
    # right after a unit finished (another one is running: it must die with the command, writing nothing)
    run(argv, home, kill_at=" done in ", at_kill=lambda: at_kill.append(len(records())))
    first = len(records())
    assert first == at_kill[0] >= 1
    # a unit's own process is training (its progress line): the same
    run(argv, home, kill_at="graddiff:  ", at_kill=lambda: at_kill.append(len(records())))
    before = len(records())
    assert before == at_kill[1] >= first
    rerun = run(argv, home)
    assert rerun.count("  run ") == 7 - before  # every finished unit reused
    recs = records()
    assert len(recs) == 7  # quick: full, graddiff x2; full: full, t3, cg, graddiff
    assert len({r["process"]["pid"] for r in recs}) == 7  # each unit in its own process
    assert all(r["process"]["torch_threads"] <= max(1, (os.cpu_count() or 1) // 2) for r in recs)
    spans = sorted((r["process"]["started"], r["process"]["finished"]) for r in recs if r["eval_mode"] == "full")
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))  # two ran at once
    t3 = next(r for r in recs if r["method"] == "t3")
    cg = next(r for r in recs if r["method"] == "cg")
    assert t3["cost"]["artifact"] == cg["cost"]["artifact"]  # one head, two temperatures
    assert t3["cost"]["trainable_params"] > 0 and t3["cost"]["peak_rss_mb"] > 100  # measured in the unit's process
    assert t3["summary"]["forget_Q_A_Prob"] != cg["summary"]["forget_Q_A_Prob"]  # T = 2.5 vs T = 1
    rep = json.loads((out / "forget10" / "compare.json").read_text())
    assert [r["method"] for r in rep["rows"]] == ["full", "t3", "cg", "graddiff"]
    for p in (out / "forget10" / "artifacts").glob("*/cost.json"):
        json.loads(p.read_text())
    from t3unlearn.eval.results import EvalResults

    for d in runs.glob("*/*/eval"):
        EvalResults.load(d)
    assert strays(out) == [] and strays(home) == []


# --------------------------------------------------------------------------- the demo and the baseline command


def test_demo_tiny(home, tmp_path, monkeypatch, capsys):
    from t3unlearn.commands.main import main

    monkeypatch.setenv("T3UNLEARN_HOME", str(home))
    monkeypatch.setenv("T3UNLEARN_PROGRESS", "off")
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "tiny", "--out", str(out), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "| model | forget quality | model utility |" in text
    for name in ("retain90", "full", "t3", "cg"):
        assert f"| {name}" in text
        assert (out / name / "TOFU_EVAL.json").is_file()
    assert "[forget]" in text and "t3       :" in text and "demo finished in" in text
    report = (out / "report.md").read_text()
    assert "| retain90 |" in report and "| t3 |" in report
    assert (out / "fq_vs_mu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "t3-head" / "head.safetensors").is_file() and (out / "t3-head" / "t3_config.json").is_file()
    from t3unlearn.t3.model import T3ForCausalLM

    from t3unlearn.t3.config import Guidance

    # the demo calibrates: the saved head carries the chosen setting and its table, and the T3 row ran that setting
    saved = T3ForCausalLM.from_pretrained(str(out / "t3-head"))
    cal = saved.config.calibration
    assert cal["holdout"] == "world-tiny:calibration" and saved.guidance.label() == cal["chosen"]["label"]
    # ... chosen by the reference rule: the forget truth ratios against the full model's on the calibration authors
    assert "reference_model" not in cal and cal["reference_source"] == "calibration"
    assert cal["objective"].startswith("KS distance between the forget truth ratios and the base's on the calibration items")
    assert all(r["tr_ks"] is not None for r in cal["rows"] if r["feasible"]) and "truth-ratio KS" in text
    assert "against the full model's truth ratios on world-tiny:calibration (never-seen authors); T3 " in text
    feasible = [r for r in cal["rows"] if r["feasible"]]  # the packaged grid, and its best feasible row chosen
    assert saved.guidance.support == 0.95 and saved.guidance.piece_floor == 10.0 and saved.guidance.copy_floor is None
    assert saved.guidance.spelling == "base"
    assert feasible and cal["chosen"]["tr_ks"] == min(r["tr_ks"] for r in feasible)
    assert f"T3 {saved.guidance.label()} (" in text and "; T = 1: T=1, s=" in text
    # where the rule chose no tempering, the demo says T3 and plain guidance are the same model here
    assert ("the rule chose no tempering (T = 1) here" in text) == (saved.guidance.temperature == 1.0)
    assert main(["demo", "--preset", "tiny", "--out", str(tmp_path / "fixed"), "--threads", "1", "--no-calibrate",
                 "--no-eval"]) == 0
    assert T3ForCausalLM.from_pretrained(str(tmp_path / "fixed" / "t3-head")).guidance == Guidance()  # the defaults


def _demo_figures(text: str) -> list[str]:
    """What a demo prints that is results, not timings or paths: the chosen setting, the answers, the tables."""
    keep, tables = [], True
    for line in text.splitlines():
        if " CPU s" in line:
            continue  # the closing summary's timings
        if line.startswith("## Runs"):
            tables = False  # the runs table holds wall times
        if "calibrated:" in line:
            keep.append(line.split("] ", 1)[1])
        elif line.startswith("  [forget]") or line.startswith("  [retain]") or line.startswith("    "):
            keep.append(line)
        elif tables and line.startswith("| "):
            keep.append(line)
    return keep


def test_demo_jobs_give_the_same_figures(home, tmp_path, monkeypatch, capsys):
    """The demo's evaluations in worker processes (--jobs 2) print what one process prints (--jobs 1), from
    cold evaluation and feature caches over the same models, and save the same head."""
    import shutil

    from t3unlearn.commands.main import main

    monkeypatch.setenv("T3UNLEARN_PROGRESS", "off")
    runs = {}
    for jobs in ("1", "2"):
        fresh = tmp_path / f"home{jobs}"
        for part in ("worlds", "models"):
            shutil.copytree(home / part, fresh / part, ignore=shutil.ignore_patterns("*.lock"))
        monkeypatch.setenv("T3UNLEARN_HOME", str(fresh))
        assert main(["demo", "--preset", "tiny", "--out", str(tmp_path / jobs), "--threads", "1", "--jobs", jobs]) == 0
        runs[jobs] = capsys.readouterr().out
    assert "| t3 |" in runs["2"] and "evaluating on" not in runs["2"]  # the workers evaluated; this process read
    figures = {jobs: _demo_figures(text) for jobs, text in runs.items()}
    assert len(figures["1"]) > 20 and figures["1"] == figures["2"]
    head = [(tmp_path / jobs / "t3-head" / "head.safetensors").read_bytes() for jobs in ("1", "2")]
    assert head[0] == head[1]


@pytest.mark.parametrize("method", ["npo", "uld"])
def test_baseline_command(home, tmp_path, monkeypatch, capsys, method):
    from t3unlearn.commands.main import main
    from t3unlearn.lm import load_lm

    monkeypatch.setenv("T3UNLEARN_HOME", str(home))
    monkeypatch.setenv("T3UNLEARN_PROGRESS", "off")
    out = tmp_path / method
    argv = ["baseline", method, "--model", "world-tiny:full", "--forget", "world-tiny:forget10", "--retain",
            "world-tiny:retain90", "--epochs", "1", "--lr", "1e-4", "--threads", "1", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    title = {"npo": "NPO", "uld": "ULD assistant"}[method]
    assert f"{title}: " in text and " steps in " in text and "trainable parameters" in text and f"saved {out}" in text
    meta = json.loads((out / ("t3unlearn_baseline.json" if method == "npo" else "uld_config.json")).read_text())
    cost = meta["cost"]
    assert cost["wall_seconds"] > 0 and cost["trainable_params"] > 0 and cost["peak_rss_mb"] > 100
    lm = load_lm(str(out))
    assert lm.generate(["Where was the author born?"], max_new_tokens=4)


# --------------------------------------------------------------------------- determinism


def test_results_do_not_depend_on_the_thread_count(home, tmp_path, monkeypatch):
    """Same seed, same machine: a baseline trained with 1 and with 2 torch threads has the same weights, and
    evaluations with 1 and 2 threads write the same TOFU_EVAL.json."""
    from t3unlearn.commands.main import main

    monkeypatch.setenv("T3UNLEARN_HOME", str(home))
    monkeypatch.setenv("T3UNLEARN_PROGRESS", "off")
    for n in (1, 2):
        assert main(["baseline", "graddiff", "--model", "world-tiny:full", "--forget", "world-tiny:forget10", "--retain",
                     "world-tiny:retain90", "--epochs", "2", "--lr", "1e-3", "--threads", str(n), "--quiet",
                     "--out", str(tmp_path / f"gd{n}")]) == 0
    w1, w2 = ((tmp_path / f"gd{n}" / "model.safetensors").read_bytes() for n in (1, 2))
    assert w1 == w2
    for n, model in ((1, "gd1"), (2, "gd2")):
        assert main(["eval", "--model", str(tmp_path / model), "--benchmark", "world", *TINY, "--max-new-tokens", "16",
                     "--threads", str(n), "--quiet", "--out", str(tmp_path / f"eval{n}")]) == 0
    e1, e2 = ((tmp_path / f"eval{n}" / "TOFU_EVAL.json").read_bytes() for n in (1, 2))
    assert e1 == e2
