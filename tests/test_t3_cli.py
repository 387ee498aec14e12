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
    assert main(["generate", "--model", head, "--do-sample", "--top-k", "5", "--stream", "--max-new-tokens", "4", "--device", "cpu", q]) == 0


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


def test_help_is_light(capsys):
    import subprocess
    import sys

    code = "import sys, t3unlearn.commands.t3, t3unlearn.t3; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(SystemExit):
        main(["unlearn", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "world:forget10" in out
