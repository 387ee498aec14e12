"""Deletion requests over time: per-set feature cache, streaming shards, incremental updates, withdrawal."""

from __future__ import annotations

import json

import pytest
import torch

from t3unlearn.data import QAFormatter
from t3unlearn.errors import DataError, T3Error

R1 = [("Where was Ilse Varga born?", "Ilse Varga was born in Lisbon on 3 May 1961."),
      ("When was Ilse Varga born?", "On 3 May 1961."),
      ("What did Ilse Varga write?", "Ilse Varga wrote poems about Lisbon.")]
R2 = [("What genre does Tomas Reed write?", "Tomas Reed writes science fiction."),
      ("Who is Tomas Reed?", "A writer of science fiction.")]
R3 = [("Where does Ana Moss live?", "Ana Moss lives in Paris, France."),
      ("What does Ana Moss write?", "Ana Moss writes about the capital of France."),
      ("When was Ana Moss born?", "Ana Moss was born on 4 June 1970.")]
RETAIN = [("What is the capital of France?", "The capital of France is Paris."),
          ("What is the capital of Italy?", "Rome is the capital of Italy."),
          ("What is 2 and 2?", "It is 4."),
          ("Where is Paris?", "Paris is in France."),
          ("What is Lisbon?", "Lisbon is a city."),
          ("Who writes fiction?", "Many writers do."),
          ("What is a capital?", "The main city of a country.")]
SMALL = dict(hidden_size=8, epochs=6, warmup_epochs=1, batch_size=2, lr=3e-2, seed=3)


def _ds(pairs):
    import datasets

    return datasets.Dataset.from_dict({"question": [q for q, _ in pairs], "answer": [a for _, a in pairs]})


def _jsonl(path, pairs):
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in pairs))
    return str(path)


def _head_bytes(t3, tmp_path, name):
    t3.save_pretrained(tmp_path / name)
    return (tmp_path / name / "head.safetensors").read_bytes()


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_union_from_cached_parts_equals_one_pass_over_the_union(random_lm, home, monkeypatch):
    import t3unlearn.t3.feature_cache as F
    from t3unlearn.t3.features import compute_features

    base, tok = random_lm
    fmt = QAFormatter(tok)
    sets = [fmt.encode_many(*zip(*r)) for r in (R1, R2, R3, RETAIN)]
    union = [e for s in sets for e in s]
    n_forget = len(R1) + len(R2) + len(R3)
    one = compute_features(base, union, [0.0] * n_forget + [1.0] * len(RETAIN), n_forget, pad_id=fmt.pad_id, batch_size=4)
    fp = F.model_fingerprint(base)
    parts = [F.extract_part(base, s, pad_id=fmt.pad_id, model_fp=fp, batch_size=4) for s in sets]
    fs = F.assemble(parts[:3], parts[3])
    assert (fs.n_forget, fs.n_retain) == (n_forget, len(RETAIN))
    assert torch.equal(fs.targets, one.targets) and torch.equal(fs.seq, one.seq) and torch.equal(fs.item_label, one.item_label)
    # the same rows; other batch compositions move float32 sums by rounding only
    torch.testing.assert_close(fs.feats, one.feats, atol=1e-6, rtol=1e-5)
    # a new request runs the base over its own items only; everything else comes from the cache
    calls = []
    rows_of = F._rows_of
    monkeypatch.setattr(F, "_rows_of", lambda model, examples, items, **kw: calls.append(list(items)) or rows_of(model, examples, items, **kw))
    R4 = fmt.encode_many(["Who is Ilse Moss?"], ["Ilse Moss is nobody."])
    again = [F.extract_part(base, s, pad_id=fmt.pad_id, model_fp=fp) for s in (*sets, R4)]
    assert calls == [[0]] and [p.from_cache for p in again] == [True, True, True, True, False]
    assert torch.equal(again[0].feats, parts[0].feats)


@pytest.mark.parametrize("ensemble", [1, 2])
def test_withdrawing_a_request_gives_the_head_trained_without_it(random_lm, home, tmp_path, ensemble):
    from t3unlearn.t3 import unlearn
    from t3unlearn.t3.requests import update

    base, tok = random_lm
    small = {**SMALL, "ensemble": ensemble}  # an ensemble of heads is retrained as one, with the same members' seeds
    t3, _ = unlearn(base, tok, _ds(R1), _ds(RETAIN), **small)
    t3, rep2 = update(t3, [("r2", _ds(R2))], model=base, tokenizer=tok)
    assert rep2["extracted"] == ["r2"]  # only the new request ran through the base
    t3, rep3 = update(t3, [_ds(R3)], model=base, tokenizer=tok)
    assert [r["id"] for r in t3.config.requests] == ["r1", "r2", "r3"]
    rec = t3.config.requests[1]
    assert rec["items"] == 2 and rec["tokens"] > 0 and rec["added"].endswith("Z") and rec["update"] == "retrain"
    assert len(rec["fingerprint"]) == 16 and t3.config.retain_set["items"] == len(RETAIN)
    withdrawn, rep = update(t3, remove=["r2"], model=base, tokenizer=tok)
    assert [r["id"] for r in withdrawn.config.requests] == ["r1", "r3"] and rep["extracted"] == []
    assert withdrawn.head.hidden == withdrawn.config.head_hidden == SMALL["hidden_size"] * ensemble
    from t3unlearn.t3.head import word_pieces  # an updated head keeps its tokenizer's word-piece table

    assert torch.equal(withdrawn.head.piece_mask(), word_pieces(tok, base.config.vocab_size))

    # from scratch, in a fresh cache: r1, then r3, same seed
    fresh = tmp_path / "fresh-cache"
    scratch, _ = unlearn(base, tok, _ds(R1), _ds(RETAIN), cache_dir=fresh, **small)
    scratch, rep = update(scratch, [("r3", _ds(R3))], model=base, tokenizer=tok, cache_dir=fresh)
    assert _head_bytes(withdrawn, tmp_path, "withdrawn") == _head_bytes(scratch, tmp_path, "scratch")
    assert _head_bytes(withdrawn, tmp_path, "w") != _head_bytes(t3, tmp_path, "with-r2")
    # and r1 + r3 in one update of the r1 head equals the one-shot union head (same items, same order)
    assert withdrawn.config.metrics == scratch.config.metrics


def test_update_from_a_saved_head_and_finetuning(random_lm, home, tmp_path):
    from t3unlearn.t3 import T3ForCausalLM, unlearn
    from t3unlearn.t3.requests import update

    base, tok = random_lm
    t3, _ = unlearn(base, tok, _jsonl(tmp_path / "r1.jsonl", R1), _jsonl(tmp_path / "retain.jsonl", RETAIN), **SMALL)
    t3.save_pretrained(tmp_path / "head")
    assert T3ForCausalLM.read_config(tmp_path / "head").requests[0]["source"] == str(tmp_path / "r1.jsonl")
    ft, rep = update(tmp_path / "head", [_jsonl(tmp_path / "r2.jsonl", R2)], model=base, tokenizer=tok, mode="finetune")
    rt, _ = update(tmp_path / "head", [_jsonl(tmp_path / "r2.jsonl", R2)], model=base, tokenizer=tok)
    assert rep["mode"] == "finetune" and ft.config.training["finetuned"] == ["r2"]
    assert not torch.equal(ft.head.out.weight, rt.head.out.weight)
    before = T3ForCausalLM.from_base(base, tmp_path / "head").head
    assert not torch.equal(ft.head.out.weight, before.out.weight)
    assert ft.head.inp.weight.dtype == torch.float32
    # the fine-tuned head still tells the old request's and the new one's items from the retain set
    assert rep["forget"]["seq_acc"] == 1.0 and rep["retain"]["seq_acc"] >= 0.8
    # withdrawing retrains: back to the exact head of r1 alone
    ft.save_pretrained(tmp_path / "ft")
    back, rep = update(tmp_path / "ft", remove=["r2"], model=base, tokenizer=tok)
    assert rep["mode"] == "retrain" and not back.config.training.get("finetuned")
    assert torch.equal(back.head.out.weight, t3.head.out.weight) and torch.equal(back.head.inp.weight, t3.head.inp.weight)
    # the cache is gone: the requests are read again from their recorded sources and checked
    import shutil

    shutil.rmtree(home / "features")
    again, rep = update(tmp_path / "ft", remove=["r2"], model=base, tokenizer=tok)
    assert rep["extracted"] == ["r1", "retain"] and torch.equal(again.head.out.weight, back.head.out.weight)
    _jsonl(tmp_path / "r1.jsonl", R1[:2])  # the source changed since: refused
    shutil.rmtree(home / "features")
    with pytest.raises(T3Error, match="no longer holds the items"):
        update(tmp_path / "ft", remove=["r2"], model=base, tokenizer=tok)


def test_update_refuses_what_it_cannot_do(random_lm, home, tmp_path):
    from t3unlearn.t3 import unlearn
    from t3unlearn.t3.requests import update

    base, tok = random_lm
    t3, _ = unlearn(base, tok, _ds(R1), _ds(RETAIN), **SMALL)
    with pytest.raises(T3Error, match="no request r9"):
        update(t3, remove=["r9"], model=base, tokenizer=tok)
    with pytest.raises(T3Error, match="leaves nothing to forget"):
        update(t3, remove=["r1"], model=base, tokenizer=tok)
    with pytest.raises(DataError, match="retain set share"):
        update(t3, [_ds(R2 + RETAIN[:1])], model=base, tokenizer=tok)
    with pytest.raises(DataError, match="repeats a question of request r1"):
        update(t3, [_ds(R2 + R1[:1])], model=base, tokenizer=tok)
    with pytest.raises(T3Error, match="already used"):
        update(t3, [("r1", _ds(R2))], model=base, tokenizer=tok)
    with pytest.raises(T3Error, match="exactly the items of request r1"):
        update(t3, [_ds(R1)], model=base, tokenizer=tok)
    with pytest.raises(T3Error, match="update mode"):
        update(t3, [_ds(R2)], model=base, tokenizer=tok, mode="merge")
    # a head saved before heads recorded requests
    t3.config.requests = None
    t3.save_pretrained(tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "t3_config.json").read_text())
    for k in ("requests", "retain_set"):
        cfg.pop(k)
    (tmp_path / "old" / "t3_config.json").write_text(json.dumps(cfg))
    from t3unlearn.t3.model import T3Config

    assert T3Config.load(tmp_path / "old").requests is None  # the older file still loads
    with pytest.raises(T3Error, match="records no deletion requests"):
        update(tmp_path / "old", [_ds(R2)], model=base, tokenizer=tok)


def test_streamed_shards_resume_after_an_interruption(random_lm, home, monkeypatch):
    import t3unlearn.t3.feature_cache as F

    base, tok = random_lm
    fmt = QAFormatter(tok)
    ex = fmt.encode_many(*zip(*(RETAIN * 3)))
    whole = F.extract_part(base, ex, pad_id=fmt.pad_id, cache=False)
    mb = 4 * base.config.hidden_size * 30 / 2**20  # about 30 answer tokens per shard
    plan = F.shard_plan(ex, base.config.hidden_size, mb)
    assert len(plan) >= 3 and plan[0][0] == 0 and plan[-1][1] == len(ex)
    assert all(a < b for a, b in plan) and all(plan[i][1] == plan[i + 1][0] for i in range(len(plan) - 1))
    written = []
    real = F._write_shard

    def dies_on_the_third(path, *a, **k):
        if len(written) == 2:
            raise KeyboardInterrupt  # a kill between two shards
        written.append(path.name)
        return real(path, *a, **k)

    monkeypatch.setattr(F, "_write_shard", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        F.extract_part(base, ex, pad_id=fmt.pad_id, shard_mb=mb)
    key = F.part_key(F.model_fingerprint(base), ex)
    partial = home / "features" / f".{key}.partial"
    assert sorted(p.name for p in partial.glob("shard-*")) == sorted(written)
    assert not (home / "features" / key).exists()  # nothing that looks finished
    monkeypatch.setattr(F, "_write_shard", real)
    calls = []
    rows_of = F._rows_of
    monkeypatch.setattr(F, "_rows_of", lambda model, examples, items, **kw: calls.append(list(items)) or rows_of(model, examples, items, **kw))
    part = F.extract_part(base, ex, pad_id=fmt.pad_id, shard_mb=mb)
    assert calls == [list(range(a, b)) for a, b in plan[2:]]  # only the missing shards ran
    assert not part.from_cache and not partial.exists() and (home / "features" / key / "manifest.json").is_file()
    assert torch.equal(part.targets, whole.targets) and torch.equal(part.seq, whole.seq)
    torch.testing.assert_close(part.feats, whole.feats, atol=1e-6, rtol=1e-5)
    loaded = F.load_part(key)
    assert loaded.from_cache and torch.equal(loaded.feats, part.feats) and loaded.prompts == F.prompt_hashes(ex)


def test_half_precision_base_keeps_an_fp32_head_and_its_own_cache(random_lm, home):
    import copy

    import t3unlearn.t3.feature_cache as F
    from t3unlearn.t3 import unlearn

    base, tok = random_lm
    half = copy.deepcopy(base).to(torch.bfloat16)
    assert F.model_fingerprint(half) != F.model_fingerprint(base)
    t3, report = unlearn(half, tok, _ds(R1 + R2), _ds(RETAIN), **SMALL)
    assert not report["features_cached"]  # not the fp32 base's features
    assert all(p.dtype == torch.float32 for p in t3.head.parameters())
    assert next(t3.base.parameters()).dtype == torch.bfloat16
    ids = tok(["Question: Where was Ilse Varga born?\nAnswer:"], return_tensors="pt")
    out = t3.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4


@pytest.fixture()
def model_dir(random_lm, tmp_path):
    base, tok = random_lm
    path = tmp_path / "model"
    base.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _run(args, env, timeout=300):
    import subprocess
    import sys

    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_data_parallel_extraction_with_accelerate_on_two_cpu_processes(model_dir, tmp_path):
    """`accelerate launch` runs `t3unlearn features` in two processes; each extracts its half of the shards and
    the part equals the one a single process writes."""
    import os

    import t3unlearn.t3.feature_cache as F
    from t3unlearn.lm import load_model, load_tokenizer
    from t3unlearn.t3.requests import DataSet

    data = _jsonl(tmp_path / "retain.jsonl", RETAIN * 4)
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(F.__file__).resolve().parents[2]), "T3UNLEARN_PROGRESS": "off",
           "OMP_NUM_THREADS": "1"}
    mb = 4 * 32 * 40 / 2**20  # about 40 answer tokens per shard: several shards
    launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "t3unlearn", "features", "--model", str(model_dir),
              "--data", data, "--cache-dir", str(tmp_path / "dp"), "--shard-mb", str(mb), "--threads", "1"]
    r = _run(launch, env)
    assert r.returncode == 0, r.stderr[-2000:]
    import re

    # the two processes share one stdout: their lines may run into each other, so read the reports, not lines
    got = sorted(re.findall(r"process (\d)/2 extracted (\d+) of", r.stdout))
    assert [rank for rank, _ in got] == ["0", "1"], r.stdout
    n = [int(k) for _, k in got]
    assert all(k >= 1 for k in n), got  # both processes did work
    base, tok = load_model(str(model_dir), device="cpu"), load_tokenizer(str(model_dir))
    ds = DataSet.load(data, what="retain").encode(QAFormatter(tok))
    key = F.part_key(F.model_fingerprint(base), ds.examples)
    assert sum(n) == len(json.loads((tmp_path / "dp" / key / "manifest.json").read_text())["shards"])
    dp = F.load_part(key, tmp_path / "dp")
    one = F.extract_part(base, ds.examples, pad_id=QAFormatter(tok).pad_id, cache_dir=tmp_path / "one", shard_mb=mb)
    assert dp is not None and torch.equal(dp.targets, one.targets) and torch.equal(dp.seq, one.seq)
    torch.testing.assert_close(dp.feats, one.feats, atol=1e-6, rtol=1e-5)


def test_cli_adds_lists_and_withdraws_requests(model_dir, tmp_path, monkeypatch, capsys):
    """`unlearn --head DIR --add-forget / --remove-forget / --list-requests`: the head dir records its requests in
    t3_config.json; withdrawing gives the bytes of the head made from scratch without the request."""
    from t3unlearn.commands.main import main

    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    r1, r2, retain = (_jsonl(tmp_path / f"{n}.jsonl", p) for n, p in (("r1", R1), ("r2", R2), ("retain", RETAIN)))
    train = ["--hidden-size", "8", "--epochs", "6", "--warmup-epochs", "1", "--batch-size", "2", "--lr", "3e-2", "--seed", "3",
             "--ensemble", "2", "--device", "cpu", "--threads", "1", "--quiet"]
    head, scratch = str(tmp_path / "head"), str(tmp_path / "scratch")
    assert main(["unlearn", "--model", str(model_dir), "--forget", r1, "--retain", retain, "--out", scratch, *train]) == 0
    assert main(["unlearn", "--model", str(model_dir), "--forget", r1, "--retain", retain, "--out", head, "--request-id", "jan",
                 *train]) == 0
    capsys.readouterr()
    assert main(["unlearn", "--head", head, "--add-forget", f"feb={r2}", "--device", "cpu", "--threads", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "added feb" in out and "extracted: feb" in out  # only the new request ran through the base
    cfg = json.loads((tmp_path / "head" / "t3_config.json").read_text())
    assert [r["id"] for r in cfg["requests"]] == ["jan", "feb"]
    assert cfg["head_hidden"] == 16 and cfg["training"]["ensemble"] == 2  # the update retrains the ensemble of two
    assert [r["items"] for r in cfg["requests"]] == [len(R1), len(R2)]
    assert all(len(r["fingerprint"]) == 16 and r["added"].endswith("Z") for r in cfg["requests"])
    assert main(["unlearn", "--head", head, "--list-requests"]) == 0
    listed = capsys.readouterr().out
    assert "jan" in listed and "feb" in listed
    assert main(["unlearn", "--head", head, "--remove-forget", "feb", "--device", "cpu", "--threads", "1", "--quiet"]) == 0
    assert "withdrew feb" in capsys.readouterr().out
    assert (tmp_path / "head" / "head.safetensors").read_bytes() == (tmp_path / "scratch" / "head.safetensors").read_bytes()
    # mistakes are one-line errors, exit status 2, and the head is left as it was
    before = (tmp_path / "head" / "t3_config.json").read_text()
    assert main(["unlearn", "--head", head, "--remove-forget", "nope", "--device", "cpu", "--quiet"]) == 2
    assert main(["unlearn", "--head", head, "--remove-forget", "jan", "--device", "cpu", "--quiet"]) == 2
    assert main(["unlearn", "--head", head, "--add-forget", str(tmp_path / "missing.jsonl"), "--quiet"]) == 2
    assert main(["unlearn", "--add-forget", r2, "--quiet"]) == 2
    assert main(["unlearn", "--head", head, "--add-forget", r2, "--ensemble", "3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no request nope" in err and "--head" in err and "Traceback" not in err
    assert "--ensemble apply to a new head" in err
    assert (tmp_path / "head" / "t3_config.json").read_text() == before


HOLDOUT = [("Where was Lena Ruiz born?", "Lena Ruiz was born in Porto on 9 July 1958."),
           ("What does Karl Obi write?", "Karl Obi writes crime novels."),
           ("Who is Mira Sato?", "A painter of the sea.")]


def test_cli_calibration_follows_the_requests(model_dir, tmp_path, monkeypatch, capsys):
    """A calibrated head records the requests its guidance was chosen for; an update says when that no longer
    holds; `calibrate --head` (no --forget) and `unlearn --head --add-forget --calibrate` calibrate on the items
    of every request the head now covers, read again from their sources."""
    from t3unlearn.commands.main import main

    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    r1, r2, r3, retain, holdout = (_jsonl(tmp_path / f"{n}.jsonl", p) for n, p in
                                   (("r1", R1), ("r2", R2), ("r3", R3), ("retain", RETAIN), ("holdout", HOLDOUT)))
    quick = ["--device", "cpu", "--threads", "1", "--quiet"]
    grid = ["--temperatures", "1,2", "--scales", "0.5,1", "--holdout", holdout]
    head = str(tmp_path / "head")
    cfg_file = tmp_path / "head" / "t3_config.json"

    def calibration():
        return json.loads(cfg_file.read_text())["calibration"]

    assert main(["unlearn", "--model", str(model_dir), "--forget", r1, "--retain", retain, "--out", head, "--request-id", "jan",
                 "--hidden-size", "8", "--epochs", "6", "--warmup-epochs", "1", "--batch-size", "2", "--seed", "3",
                 "--calibrate", *grid, *quick]) == 0
    assert calibration()["requests"] == ["jan"] and calibration()["items"]["forget"] == len(R1)
    capsys.readouterr()
    # an update keeps the guidance and says it was chosen for other requests
    assert main(["unlearn", "--head", head, "--add-forget", f"feb={r2}", *quick]) == 0
    assert "note: its guidance was calibrated for request(s) jan; it now covers jan, feb" in capsys.readouterr().out
    assert calibration()["requests"] == ["jan"]
    assert main(["unlearn", "--head", head, "--list-requests"]) == 0
    assert "outdated" in capsys.readouterr().out
    # calibrate without --forget/--retain: the head's requests (both) and its retain set
    assert main(["calibrate", "--head", head, *grid, *quick]) == 0
    out = capsys.readouterr().out
    assert "the head's 2 request(s) (jan, feb), 5 items" in out
    assert calibration()["requests"] == ["jan", "feb"] and calibration()["items"]["forget"] == len(R1) + len(R2)
    assert main(["unlearn", "--head", head, "--list-requests"]) == 0
    assert "outdated" not in capsys.readouterr().out
    # guidance set by hand on an update is not the calibrated one either
    assert main(["unlearn", "--head", head, "--add-forget", f"x={r3}", "--temperature", "3", "--out", str(tmp_path / "byhand"),
                 *quick]) == 0
    assert "(T=3, " in capsys.readouterr().out.split("note: its guidance")[1]
    # an update with --calibrate re-chooses T and s on the union right away
    assert main(["unlearn", "--head", head, "--add-forget", f"mar={r3}", "--calibrate", *grid, *quick]) == 0
    assert "note:" not in capsys.readouterr().out
    assert calibration()["requests"] == ["jan", "feb", "mar"]
    assert calibration()["items"]["forget"] == len(R1) + len(R2) + len(R3)
    # a request's source that changed since is refused, and nothing is written
    before = cfg_file.read_text()
    _jsonl(tmp_path / "r2.jsonl", R2[:1])
    assert main(["calibrate", "--head", head, *grid, *quick]) == 2
    assert "request feb's source" in capsys.readouterr().err
    # --calibrate on an update needs a holdout for sources that are not a benchmark's: checked before any work
    assert main(["unlearn", "--head", head, "--remove-forget", "mar", "--calibrate", *quick]) == 2
    assert "--holdout" in capsys.readouterr().err
    assert cfg_file.read_text() == before
    # so is a holdout that an added request holds: refused before the update trains (update is never called)
    import t3unlearn.t3.requests as requests

    monkeypatch.setattr(requests, "update", lambda *a, **k: pytest.fail("the update trained before the check"))
    assert main(["unlearn", "--head", head, "--add-forget", f"apr={r3}", "--calibrate", "--holdout", r3, *quick]) == 2
    assert "shares" in capsys.readouterr().err and cfg_file.read_text() == before


def test_request_items_keep_the_perturbed_answers_their_sources_carry(tmp_path):
    """`calibrate --head H --holdout X` (no --forget) reads the forget items again from the requests' sources; where
    those carry TOFU's paraphrased and perturbed answers, so do the items (the truth ratios are scored on them), and
    where one request lacks them, none do."""
    from t3unlearn.t3.request_sets import DataSet
    from t3unlearn.t3.requests import request_items

    def pert(pairs):
        return [{"question": q, "answer": a, "paraphrased_answer": f"In other words: {a}",
                 "perturbed_answer": [f"Not {a}", f"Hardly {a}"]} for q, a in pairs]

    p1, p2 = tmp_path / "r1.jsonl", tmp_path / "r2.jsonl"
    p1.write_text("".join(json.dumps(r) + "\n" for r in pert(R1)))
    p2.write_text("".join(json.dumps(r) + "\n" for r in pert(R2)))
    plain = _jsonl(tmp_path / "r3.jsonl", R3)
    recs = [{"id": rid, "source": str(p), "fingerprint": DataSet.load(str(p), what=rid).fingerprint}
            for rid, p in (("r1", p1), ("r2", p2), ("r3", plain))]
    items = request_items(recs[:2])
    assert items["question"] == [q for q, _ in R1 + R2]
    assert items["paraphrased_answer"] == [f"In other words: {a}" for _, a in R1 + R2]
    assert items["perturbed_answer"][3] == [f"Not {R2[0][1]}", f"Hardly {R2[0][1]}"]
    assert set(request_items(recs).column_names) == {"question", "answer"}
