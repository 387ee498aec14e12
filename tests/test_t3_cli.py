"""t3unlearn unlearn / generate end to end on small jsonl files."""

from __future__ import annotations

import json

import pytest

from t3unlearn.commands.main import main

from test_t3_train import FORGET, RETAIN  # noqa: E402  (tests dir is on sys.path under pytest)


def _jsonl(path, pairs):
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in pairs))
    return str(path)


@pytest.fixture()
def saved(random_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    base, tok = random_lm
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    return tmp_path


def test_unlearn_then_generate(saved, capsys):
    forget, retain = _jsonl(saved / "f.jsonl", FORGET), _jsonl(saved / "r.jsonl", RETAIN)
    head = str(saved / "head")
    args = ["unlearn", "--model", str(saved / "base"), "--forget", forget, "--retain", retain, "--out", head,
            "--hidden-size", "8", "--epochs", "3", "--batch-size", "2", "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "token acc" in out and "forget" in out and "retain" in out and "wall" in out and "one forward pass" in out
    assert (saved / "head" / "head.safetensors").is_file()
    assert main(args + ["--hidden-size", "4", "--overwrite"]) == 0  # second run: features from the cache
    assert "from cache" in capsys.readouterr().out

    q = "Where was Ilse Varga born?"
    assert main(["generate", "--model", str(saved / "base"), "--head", head, "--max-new-tokens", "4", "--device", "cpu", q]) == 0
    out = capsys.readouterr().out
    assert "T=1.75, s=0.7, adaptive" in out and f"Q: {q}" in out  # the default guidance, named
    assert main(["generate", "--model", head, "--temperature", "1", "--num-beams", "2", "--max-new-tokens", "4", "--device", "cpu", q, "Who?"]) == 0
    assert "(T=1, s=0.7)" in capsys.readouterr().out  # T overridden, s saved; at T = 1 no tempering to name
    sampled = ["generate", "--model", head, "--do-sample", "--top-k", "5", "--max-new-tokens", "4", "--device", "cpu", q]
    assert main(sampled) == 0
    plain = capsys.readouterr().out.split("\nA: ")[1].rstrip("\n")
    assert main(sampled + ["--stream"]) == 0  # streamed as it comes: the same answer (same seed), no space before it
    assert capsys.readouterr().out.split("\nA: ")[1].rstrip("\n") == plain and plain and not plain[0].isspace()


def test_user_mistakes_are_one_line_errors(saved, capsys):
    forget, retain = _jsonl(saved / "f.jsonl", FORGET), _jsonl(saved / "r.jsonl", RETAIN + FORGET[:1])
    base = str(saved / "base")
    assert main(["unlearn", "--model", base, "--forget", forget, "--retain", retain, "--out", str(saved / "h")]) == 2
    assert "overlap" in capsys.readouterr().err
    assert main(["unlearn", "--model", base, "--forget", forget, "--retain", forget + "x", "--out", str(saved / "h")]) == 2
    with pytest.raises(SystemExit) as bad_t:  # a usage error, caught as the option is parsed
        main(["unlearn", "--model", base, "--forget", forget, "--retain", retain, "--out", str(saved / "h"), "--temperature", "0"])
    assert bad_t.value.code == 2 and "argument --temperature: temperature must be > 0" in capsys.readouterr().err
    assert main(["generate", "--model", base, "--temperature", "2", "hi"]) == 2
    assert "needs a head" in capsys.readouterr().err
    assert main(["generate", "--model", base, "--head", str(saved), "hi"]) == 2
    assert "t3_config.json" in capsys.readouterr().err


def test_relative_sources_are_recorded_absolute(saved, monkeypatch):
    """A head records its data files absolute: calibrate or update it from another directory reads them again."""
    monkeypatch.chdir(saved)
    for name, pairs in (("f", FORGET[:3]), ("g", FORGET[3:]), ("r", RETAIN)):
        _jsonl(saved / f"{name}.jsonl", pairs)
    quick = ["--device", "cpu", "--threads", "1", "--quiet"]
    assert main(["unlearn", "--model", "base", "--forget", "f.jsonl", "--retain", "r.jsonl", "--out", "head",
                 "--hidden-size", "4", "--epochs", "1", *quick]) == 0
    assert main(["unlearn", "--head", "head", "--add-forget", "feb=g.jsonl", *quick]) == 0
    cfg = json.loads((saved / "head" / "t3_config.json").read_text())
    assert [r["source"] for r in cfg["requests"]] == [str((saved / n).resolve()) for n in ("f.jsonl", "g.jsonl")]
    assert cfg["retain_set"]["source"] == str((saved / "r.jsonl").resolve())


def test_calibration_needs_are_checked_before_training(saved, capsys):
    """--pretrained scores truth ratios on the forget items' perturbed answers: a plain forget set is refused before
    the head is trained, not after."""
    forget, retain = _jsonl(saved / "f.jsonl", FORGET), _jsonl(saved / "r.jsonl", RETAIN)
    holdout = _jsonl(saved / "h.jsonl", [("Where was Lena Ruiz born?", "In Porto."), ("Who is Mira Sato?", "A painter.")])
    base = str(saved / "base")
    assert main(["unlearn", "--model", base, "--forget", forget, "--retain", retain, "--out", str(saved / "head"), "--calibrate",
                 "--holdout", holdout, "--pretrained", base, "--device", "cpu", "--threads", "1", "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert "needs the forget items' paraphrased and perturbed answers" in err and "--perturbed SOURCE" in err
    assert "head training" not in out and not (saved / "head").exists()


def test_help_is_light(capsys):
    import subprocess
    import sys

    code = "import sys, t3unlearn.commands.t3, t3unlearn.t3; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(SystemExit):
        main(["unlearn", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "world:forget10" in out
    assert "# no ID=: id r1 (first free rN)" in out  # what an unnamed request after req-1, req-2 is called
