"""Several writers of one cache entry at once, and the feature cache's key.

Two processes building the same world, the same tiny models or the same features at once end with one
correct cache entry (the others wait on a file lock, or write the same entry atomically); a writer killed
half-way leaves nothing the next one trips on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env(home: Path) -> dict:
    env = dict(os.environ, T3UNLEARN_HOME=str(home), PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
               T3UNLEARN_PROGRESS="off", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def _run_together(scripts: list[str], home: Path, timeout: float = 600) -> list[str]:
    """Start every script at once (each waits for the others to be up), return their outputs; all must succeed."""
    gate = home / "gate"
    prelude = textwrap.dedent(f"""
        import os, sys, time
        open({str(gate)!r} + "." + str(os.getpid()), "w").close()
        while len([f for f in os.listdir({str(home)!r}) if f.startswith("gate.")]) < {len(scripts)}:
            time.sleep(0.05)
    """)
    home.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen([sys.executable, "-c", prelude + textwrap.dedent(s)], env=_env(home), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for s in scripts]
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
    return outs


def _strays(root: Path) -> list[str]:
    """Leftovers of atomic writes (``.NAME.PID.*.tmp``, ``.NAME.old-PID.*``) anywhere under ``root``."""
    return [str(p) for p in root.rglob(".*") if p.name.endswith(".tmp") or ".old-" in p.name]


# --------------------------------------------------------------------------- atomic directories


def test_atomic_dir_with_a_marker_replaces_only_its_own_output(tmp_path):
    """atomic_dir(marker=...) writes a new or empty directory and replaces an earlier output (the marker in it); a
    file or a directory of anything else is refused before anything is written, and left as it was."""
    from t3unlearn.errors import T3Error
    from t3unlearn.io import atomic_dir

    def write(path):
        with atomic_dir(path, marker="out.json", what="an earlier output") as tmp:
            (tmp / "out.json").write_text("{}")

    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "new", tmp_path / "empty", tmp_path / "new"):  # the last: its own earlier output
        write(path)
        assert sorted(p.name for p in path.iterdir()) == ["out.json"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    (tmp_path / "a_file").write_text("keep")
    for path, why in ((tmp_path / "mine", "is a non-empty directory that is not an earlier output"),
                      (tmp_path / "a_file", "is a file")):
        with pytest.raises(T3Error, match=why):
            write(path)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep" and (tmp_path / "a_file").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "empty", "mine", "new"]  # no temporaries left


def test_atomic_dir_two_writers_at_once(tmp_path):
    """Both writers of one entry succeed, at the same instant; what remains is one of them, whole."""
    from t3unlearn.io import atomic_dir

    target = tmp_path / "entry"
    barrier = threading.Barrier(2)
    errors = []

    def write(tag: str):
        try:
            for _ in range(20):
                with atomic_dir(target) as tmp:
                    (tmp / "a").write_text(tag)
                    (tmp / "b").write_text(tag)
                    barrier.wait()  # both rename into place at once
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=write, args=(t,)) for t in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert (target / "a").read_text() == (target / "b").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]


def test_a_killed_writers_leftovers_are_removed(tmp_path):
    """A process killed inside atomic_dir / atomic_write leaves a temporary; the next writer removes it."""
    from t3unlearn.io import atomic_dir, save_json

    code = f"""
        import os
        from t3unlearn.io import atomic_dir, atomic_write
        with atomic_write({str(tmp_path / 'f.json')!r}) as fh:
            fh.write("half")
            with atomic_dir({str(tmp_path / 'd')!r}) as tmp:
                (tmp / "x").write_text("half")
                os._exit(9)  # like kill -9: no cleanup runs
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=_env(tmp_path / "home"))
    assert proc.returncode == 9
    assert len(_strays(tmp_path)) == 2 and not (tmp_path / "d").exists() and not (tmp_path / "f.json").exists()
    save_json(tmp_path / "f.json", {"ok": 1})
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "x").write_text("whole")
    assert _strays(tmp_path) == []
    assert (tmp_path / "d" / "x").read_text() == "whole"


# --------------------------------------------------------------------------- worlds, models, features


def test_two_processes_build_the_same_world(tmp_path):
    home = tmp_path / "home"
    code = """
        from t3unlearn.world import ensure_world
        print("WORLD", ensure_world("tiny"))
    """
    outs = _run_together([code, code], home)
    paths = {line.split(" ", 1)[1] for out in outs for line in out.splitlines() if line.startswith("WORLD ")}
    assert len(paths) == 1
    world = Path(paths.pop())
    import json

    from t3unlearn.io import file_fingerprint

    meta = json.loads((world / "world.json").read_text())
    files = {p.name for p in world.iterdir()}
    assert {"forget10.jsonl", "retain90.jsonl", "world.json"} <= files
    # the content hash the builder recorded matches the files on disk (one writer's files, whole)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for name in files - {"world.json"}:
            (Path(d) / name).write_bytes((world / name).read_bytes())
        assert file_fingerprint(d) == meta["content_sha256"]
    assert [p.name for p in (home / "worlds").iterdir() if not p.name.endswith(".lock")] == [world.name]
    assert _strays(home) == []


@pytest.mark.slow
def test_two_processes_train_the_same_models(tiny_world, tmp_path):
    """Two processes asking for the same models train them once; a third with other fine-tuning settings
    shares the pretrained base, which is trained once too."""
    home = tmp_path / "home"
    small = "n_layers=1, d_model=32, n_heads=2, n_kv_heads=2, ffn=64, pretrain_epochs=1, vocab_size=512"

    def code(epochs):
        return f"""
            from t3unlearn.world import ensure_models
            paths = ensure_models({str(tiny_world)!r}, ("full",), log=print, progress=False, finetune_epochs={epochs}, {small})
            print("FULL", paths["full"])
        """

    outs = _run_together([code(1), code(1), code(2)], home)
    text = "\n".join(outs)
    assert text.count("pretraining a") == 1, text
    assert text.count("fine-tuning 'full' on") == 2, text  # once per fine-tuning setting
    paths = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("FULL ")]
    assert len(paths) == 3 and paths[0] == paths[1] != paths[2]
    from transformers import AutoModelForCausalLM

    for p in set(paths):
        AutoModelForCausalLM.from_pretrained(p)
    assert _strays(home) == []


def _feature_script(model_dir: Path) -> str:
    return f"""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from t3unlearn.data import QAFormatter
        from t3unlearn.t3.feature_cache import extract_features
        model = AutoModelForCausalLM.from_pretrained({str(model_dir)!r}).eval()
        fmt = QAFormatter(AutoTokenizer.from_pretrained({str(model_dir)!r}))
        ex = fmt.encode_many(["Where was Ilse Varga born?", "What is the capital of France?"],
                             ["In Lisbon.", "The capital of France is Paris."])
        fs = extract_features(model, ex, 1, pad_id=fmt.pad_id, cache=True)
        print("KEY", fs.key, fs.from_cache, float(fs.feats.sum()))
    """


def test_two_processes_extract_the_same_features(random_lm, tmp_path, monkeypatch):
    model, tok = random_lm
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    home = tmp_path / "home"
    outs = _run_together([_feature_script(tmp_path / "m")] * 2, home)
    lines = [line.split() for out in outs for line in out.splitlines() if line.startswith("KEY ")]
    assert len(lines) == 2 and lines[0][1] == lines[1][1] and lines[0][3] == lines[1][3]
    # one cache entry per data set (the forget item, the retain item), each written once, whole
    entries = sorted(p.name for p in (home / "features").iterdir() if not p.name.startswith(".") and p.is_dir())
    assert len(entries) == 2
    from t3unlearn.t3.feature_cache import assemble, load_part

    monkeypatch.setenv("T3UNLEARN_HOME", str(home))
    parts = {k: load_part(k) for k in entries}
    assert all(part is not None for part in parts.values())
    forget, retain = sorted(parts.values(), key=lambda part: part.n_tokens)  # "In Lisbon." is the shorter answer
    cached = assemble([forget], retain)
    assert cached.key == lines[0][1] and abs(float(cached.feats.sum()) - float(lines[0][3])) < 1e-3
    assert _strays(home) == []


def test_feature_cache_key_covers_the_weights(random_lm, tmp_path, monkeypatch):
    """Features of a model whose weights changed (fine-tuned, same config) are computed again, never served
    from the cache of the old weights; the same weights do hit the cache."""
    import copy

    import torch

    from t3unlearn.data import QAFormatter
    from t3unlearn.t3.feature_cache import extract_features
    from t3unlearn.t3.features import compute_features

    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    base, tok = random_lm
    fmt = QAFormatter(tok)
    ex = fmt.encode_many(["Where was Ilse Varga born?", "What is the capital of France?"], ["In Lisbon.", "Paris."])
    first = extract_features(base, ex, 1, pad_id=fmt.pad_id, cache=True)
    again = extract_features(copy.deepcopy(base), ex, 1, pad_id=fmt.pad_id, cache=True)
    assert not first.from_cache and again.from_cache and again.key == first.key
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        tuned.model.norm.weight.mul_(1.5)  # a "fine-tuned" model: same config, other weights
    got = extract_features(tuned, ex, 1, pad_id=fmt.pad_id, cache=True)
    direct = compute_features(tuned, ex, [0.0, 1.0], 1, pad_id=fmt.pad_id)
    assert not got.from_cache and got.key != first.key
    assert torch.allclose(got.feats, direct.feats) and not torch.allclose(got.feats, first.feats)
