"""The synthetic world: TOFU's configs, split structure, determinism, loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from t3unlearn.errors import T3Error
from t3unlearn.world import CONFIGS, build_world, ensure_world, settings_for
from t3unlearn.world.generate import n_forget


def _read(world: Path, config: str) -> list[dict]:
    return [json.loads(line) for line in (world / f"{config}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def default_world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("w") / "default", "default")


def test_default_sizes_match_tofu(default_world):
    sizes = json.loads((default_world / "world.json").read_text())["sizes"]
    expected = {
        "full": 4000, "retain90": 3600, "retain95": 3800, "retain99": 3960, "forget01": 40, "forget05": 200,
        "forget10": 400, "forget01_perturbed": 40, "forget05_perturbed": 200, "forget10_perturbed": 400,
        "retain_perturbed": 400, "real_authors_perturbed": 100, "world_facts_perturbed": 117,
        "holdout01": 40, "holdout05": 200, "holdout10": 400,
    }
    for config, n in expected.items():
        assert sizes[config] == n, config
    assert set(CONFIGS) <= set(sizes)
    idk = _read(default_world, "idk")
    assert 50 <= len(idk) <= 100 and len({r["answer"] for r in idk}) == len(idk)


@pytest.mark.parametrize("preset", ["default", "tiny"])
def test_split_structure(preset, default_world, tiny_world):
    world = default_world if preset == "default" else tiny_world
    c = {name: _read(world, name) for name in CONFIGS}
    key = lambda r: (r["question"], r["answer"])  # noqa: E731
    full = [key(r) for r in c["full"]]
    assert len(set(full)) == len(full)
    assert len({r["question"] for r in c["full"]}) == len(full)
    authors = list(dict.fromkeys(r["author"] for r in c["full"]))
    prev_forget: set = set()
    for pct in (1, 5, 10):
        forget, retain, hold = c[f"forget{pct:02d}"], c[f"retain{100 - pct}"], c[f"holdout{pct:02d}"]
        k = n_forget(len(authors), pct)
        # forget = the last k whole authors; retain = full minus forget, in order
        assert [r["author"] for r in forget] == [r["author"] for r in c["full"] if r["author"] in authors[-k:]]
        assert [key(r) for r in retain] + [key(r) for r in forget] == full
        assert not {r["author"] for r in forget} & {r["author"] for r in retain}
        assert {key(r) for r in forget} >= prev_forget
        prev_forget = {key(r) for r in forget}
        # the perturbed config holds the same items in the same order
        pert = c[f"forget{pct:02d}_perturbed"]
        assert [key(r) for r in pert] == [key(r) for r in forget]
        # holdout: same size, authors never in full
        assert len(hold) == len(forget)
        assert not {r["author"] for r in hold} & set(authors)
        assert not {r["question"] for r in hold} & {r["question"] for r in c["full"]}
    assert {key(r) for r in c["holdout01"]} <= {key(r) for r in c["holdout05"]} <= {key(r) for r in c["holdout10"]}
    # retain_perturbed: whole retain authors kept by every retain split
    rp_keys = {key(r) for r in c["retain_perturbed"]}
    assert rp_keys <= {key(r) for r in c["retain90"]}
    # every config indexed 0..N-1
    for name in CONFIGS:
        assert [r["index"] for r in c[name]] == list(range(len(c[name]))), name


@pytest.mark.parametrize("preset", ["default", "tiny"])
def test_perturbed_answers(preset, default_world, tiny_world):
    world = default_world if preset == "default" else tiny_world
    for config, n in [("forget10_perturbed", 5), ("retain_perturbed", 5), ("real_authors_perturbed", 3),
                      ("world_facts_perturbed", 3)]:
        for r in _read(world, config):
            assert len(r["perturbed_answer"]) == n, config
            assert r["answer"] not in r["perturbed_answer"], r
            assert len(set(r["perturbed_answer"])) == n, r
            assert r["paraphrased_answer"] != r["answer"], r
            assert all(p.strip() for p in r["perturbed_answer"])


def test_real_authors_and_world_facts_are_in_pretraining(default_world):
    pre = {(r["question"], r["answer"]) for r in _read(default_world, "pretrain")}
    for config in ("real_authors_perturbed", "world_facts_perturbed"):
        assert all((r["question"], r["answer"]) in pre for r in _read(default_world, config))
    full_authors = {r["author"] for r in _read(default_world, "full")}
    assert not full_authors & {r["author"] for r in _read(default_world, "pretrain")}


def test_deterministic(tmp_path):
    a = build_world(tmp_path / "a", "tiny", seed=3)
    b = build_world(tmp_path / "b", "tiny", seed=3)
    c = build_world(tmp_path / "c", "tiny", seed=4)
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "full.jsonl").read_bytes() != (c / "full.jsonl").read_bytes()
    assert json.loads((a / "world.json").read_text())["fingerprint"] != json.loads((c / "world.json").read_text())["fingerprint"]


def test_ensure_world_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path))
    p1 = ensure_world("tiny")
    assert p1.parent == tmp_path / "worlds" and (p1 / "world.json").is_file()
    stamp = (p1 / "full.jsonl").stat().st_mtime_ns
    assert ensure_world("tiny") == p1 and (p1 / "full.jsonl").stat().st_mtime_ns == stamp
    assert ensure_world("tiny", seed=1) != p1


def test_all_configs_load(tiny_world):
    from t3unlearn.data import load_qa

    for config in CONFIGS:
        ds = load_qa(f"{tiny_world}:{config}")
        assert len(ds) > 0 and "index" in ds.column_names
        if config.endswith("_perturbed"):
            assert {"paraphrased_answer", "perturbed_answer"} <= set(ds.column_names)


def test_world_source_loads(tmp_path, monkeypatch):
    from t3unlearn.benchmarks import resolve_data
    from t3unlearn.data import load_qa

    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path))
    with pytest.raises(T3Error, match="resolve it first"):
        load_qa("world-tiny:forget10_perturbed")  # the library never builds worlds on its own
    ds = load_qa(resolve_data("world-tiny:forget10_perturbed"))
    assert len(ds) == 20 and len(ds[0]["perturbed_answer"]) == 5


def _template_regex(template: str):
    """A template like "{name} was born in {city}, {country}." as a regex matching its renderings."""
    import re
    import string

    parts = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field:
            parts.append("(.+?)")
    return re.compile("".join(parts))


def test_perturbed_answers_perturb_the_paraphrase(tiny_world):
    """As TOFU's: the truth ratio compares the paraphrase with perturbed answers written in the
    paraphrase's wording (the facts differ, the words do not); real authors, whose truth ratio compares
    with the answer itself, keep the answer's wording."""
    from t3unlearn.world.generate import KINDS

    n = differs = 0
    for config in ("forget10_perturbed", "retain_perturbed"):
        for r in (json.loads(x) for x in (tiny_world / f"{config}.jsonl").read_text().splitlines()):
            questions, ans_t, para_t = KINDS[r["kind"]]
            para_re, ans_re = _template_regex(para_t), _template_regex(ans_t)
            assert para_re.fullmatch(r["paraphrased_answer"])
            for wrong in r["perturbed_answer"]:
                assert para_re.fullmatch(wrong) and wrong != r["paraphrased_answer"], (r["kind"], wrong)
                n += 1
                differs += not ans_re.fullmatch(wrong)
            # TOFU's paraphrased_question: the kind's other phrasing of the question
            assert r["paraphrased_question"] != r["question"]
            assert any(_template_regex(q).fullmatch(r["paraphrased_question"]) for q in questions)
    assert n > 100 and differs > 0.8 * n  # most paraphrase templates cannot be read as the answer's
    for r in (json.loads(x) for x in (tiny_world / "real_authors_perturbed.jsonl").read_text().splitlines()):
        ans_re = _template_regex(KINDS[r["kind"]][1])
        assert all(ans_re.fullmatch(w) for w in r["perturbed_answer"]), r


def test_bad_settings():
    with pytest.raises(T3Error):
        settings_for("huge")
    with pytest.raises(T3Error):
        settings_for("tiny", qa_per_author=99)
    with pytest.raises(T3Error):
        settings_for("tiny", n_authors=1)


def test_cli_build(tmp_path, capsys):
    from t3unlearn.commands.main import main

    assert main(["world", "build", "--preset", "tiny", "--out", str(tmp_path / "w"), "--seed", "2"]) == 0
    assert (tmp_path / "w" / "forget10.jsonl").is_file()
    assert "fingerprint" in capsys.readouterr().out
    assert main(["world", "build", "--preset", "nope", "--out", str(tmp_path / "x")]) == 2
    assert main(["world", "train", "--world", str(tmp_path / "missing")]) == 2


def test_build_refuses_a_directory_that_is_not_a_world(tmp_path, capsys):
    """--out is replaced whole: a user's own non-empty directory (or a file) is refused and left as it was, while a
    world built before is rebuilt in place."""
    from t3unlearn.commands.main import main

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["world", "build", "--preset", "tiny", "--out", str(mine)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("t3unlearn world build: error: --out ")  # named as argparse names the subcommand
    assert err.endswith("is a non-empty directory that is not a built world (it would be replaced whole); "
                        "choose a new or empty directory.") and "--out" in err and len(err.splitlines()) == 1
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    (tmp_path / "a_file").write_text("x")
    assert main(["world", "build", "--preset", "tiny", "--out", str(tmp_path / "a_file")]) == 2
    assert (tmp_path / "a_file").read_text() == "x"
    assert main(["world", "build", "--preset", "tiny", "--out", str(tmp_path / "w")]) == 0
    assert main(["world", "build", "--preset", "tiny", "--out", str(tmp_path / "w"), "--seed", "1"]) == 0
    assert '"seed": 1' in (tmp_path / "w" / "world.json").read_text()


def test_calibration_set_is_not_what_the_evaluation_reads(default_world):
    """The world's calibration authors pass the overlap check for every split; its holdout is refused."""
    from t3unlearn.benchmarks import check_calibration_set, get_benchmark
    from t3unlearn.errors import DataError

    bench = get_benchmark(default_world)
    for split in ("forget01", "forget05", "forget10"):
        items, name = bench.calibration(split)
        assert len(items) == 400 and name.endswith(":calibration")
    with pytest.raises(DataError, match=r"\(40 of .*:holdout01\)"):
        check_calibration_set(bench.qa("holdout10"), f"{default_world}:forget01", "--holdout holdout10")
    with pytest.raises(DataError, match="retain_perturbed"):
        bench.check_calibration(bench.qa("retain90").select(range(5)), "forget10")
