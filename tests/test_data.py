import json

import pytest

from t3unlearn.data import REFERENCE_SYSTEM_PROMPT, IGNORE_INDEX, QAFormatter, check_disjoint, check_holdout, collate, load_qa
from t3unlearn.errors import DataError


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_load_jsonl_adds_index(tmp_path):
    f = _write(tmp_path / "forget.jsonl", [{"question": "q1?", "answer": "a1"}, {"question": "q2?", "answer": "a2"}])
    ds = load_qa(str(f))
    assert ds["index"] == [0, 1]
    assert ds["question"] == ["q1?", "q2?"]


def test_directory_with_config(tmp_path):
    _write(tmp_path / "forget10.jsonl", [{"question": "q?", "answer": "a"}])
    assert len(load_qa(f"{tmp_path}:forget10")) == 1
    with pytest.raises(DataError, match="available: forget10"):
        load_qa(f"{tmp_path}:retain90")
    with pytest.raises(DataError, match="name a config"):
        load_qa(str(tmp_path))


@pytest.mark.parametrize(
    "rows,match",
    [
        ([{"question": "q?"}], "lacks field"),
        ([{"question": "q?", "answer": "  "}], "empty 'answer'"),
    ],
)
def test_bad_items(tmp_path, rows, match):
    f = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=match):
        load_qa(str(f))


@pytest.mark.parametrize(
    "rows,match",
    [
        ([{"question": "q?", "answer": "a"}, {"question": 7, "answer": "A"}], r"item 1's 'question' is an int, not text"),
        ([{"question": "q?", "answer": 5}], r"item 0's 'answer' is an int, not text"),
        ([{"question": "q?", "answer": ["a", "b"]}], r"item 0's 'answer' is a list, not text"),
    ],
)
def test_question_and_answer_must_be_text(tmp_path, rows, match):
    f = _write(tmp_path / "forget.jsonl", rows)
    with pytest.raises(DataError, match=r"forget.jsonl: " + match + "; every question and answer must be a string"):
        load_qa(str(f))


@pytest.mark.parametrize(
    "extra,match",
    [
        ({"perturbed_answer": "Not a."}, r"item 0's 'perturbed_answer' is str, not a list of texts; write it as a list"),
        ({"perturbed_answer": ["x", 3]}, r"item 0's 'perturbed_answer' is list, not a list of texts"),
        ({"paraphrased_answer": ["a"]}, r"item 0's 'paraphrased_answer' is list, not text"),
    ],
)
def test_tofu_perturbation_fields_have_tofus_types(tmp_path, extra, match):
    """A perturbed_answer written as one string (not a list) would be read letter by letter as perturbed answers."""
    f = _write(tmp_path / "holdout.jsonl", [{"question": "q?", "answer": "a", **extra}])
    with pytest.raises(DataError, match=r"holdout.jsonl: " + match):
        load_qa(str(f))
    ok = _write(tmp_path / "ok.jsonl", [{"question": "q?", "answer": "a", "paraphrased_answer": "b", "perturbed_answer": ["c"]}])
    assert load_qa(str(ok))["perturbed_answer"] == [["c"]]
    mixed = _write(tmp_path / "mixed.jsonl", [{"question": "q?", "answer": "a", "perturbed_answer": ["c"]}, {"question": "r?", "answer": "b"}])
    assert load_qa(str(mixed))["perturbed_answer"] == [["c"], None]  # an item without them: calibration says so


@pytest.mark.parametrize(
    "text,where",
    [
        ('{"question": "q1?", "answer": "a1"}\n{"question": "q2?", "answ', "line 2, column 21 (Unterminated string)"),
        ('{"question": "q1?", "answer": "a1"},\n', "line 1, column 36 (Extra data)"),
        ('{"question": "q1?", "answer": "a1"}\n\n[1, 2]\n', "line 3 (not a JSON object)"),
    ],
)
def test_malformed_json_names_its_first_bad_line(tmp_path, capfd, text, where):
    (tmp_path / "bad.jsonl").write_text(text)
    with pytest.raises(DataError) as info:
        load_qa(str(tmp_path / "bad.jsonl"))
    assert str(info.value) == (f"{tmp_path / 'bad.jsonl'} is not valid JSON: {where}; fix or remove that line (the file is "
                               'truncated or corrupt; each item is one {"question": ..., "answer": ...} object).')
    assert "Failed to load JSON" not in capfd.readouterr().err  # datasets' own log line is not shown


def test_a_world_directory_lists_only_its_configs(tmp_path):
    _write(tmp_path / "forget10.jsonl", [{"question": "q?", "answer": "a"}])
    _write(tmp_path / "idk.jsonl", [{"answer": "I don't know."}])
    (tmp_path / "world.json").write_text("{}")
    with pytest.raises(DataError, match=r"available: forget10\.$"):
        load_qa(f"{tmp_path}:forget7")


def test_benchmark_names_are_resolved_first():
    """world:NAME names a data set or a model of the embedded world: the library asks to resolve it first."""
    from t3unlearn.lm import load_lm

    with pytest.raises(DataError, match="names the embedded world; resolve it first with t3unlearn.benchmarks.resolve_data"):
        load_qa("world:forget10")
    for spec in ("world:full", "world-tiny:retain90", "tofu:full"):
        with pytest.raises(ValueError, match=f"'{spec}' names a model of an embedded benchmark; resolve it first with "
                                             "t3unlearn.benchmarks.resolve_model"):
            load_lm(spec)


def test_empty_and_corrupt_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_qa(str(tmp_path / "empty.jsonl"))
    (tmp_path / "corrupt.jsonl").write_text('{"question": "q", "answ')
    with pytest.raises(DataError, match="corrupt"):
        load_qa(str(tmp_path / "corrupt.jsonl"))


def test_unknown_source():
    with pytest.raises(DataError, match="neither an existing file"):
        load_qa("no/such/thing.jsonl")


def test_overlap_detected(tmp_path):
    f = load_qa(str(_write(tmp_path / "f.jsonl", [{"question": "same?", "answer": "a"}])))
    r = load_qa(str(_write(tmp_path / "r.jsonl", [{"question": "same?", "answer": "b"}, {"question": "other?", "answer": "c"}])))
    with pytest.raises(DataError, match="overlap in 1"):
        check_disjoint(f, r)


def test_plain_template_masks_prompt_and_appends_eos(small_tokenizer):
    fmt = QAFormatter(small_tokenizer)
    assert not fmt.use_chat
    ex = fmt.encode("Where was Ilse Varga born?", "Ilse Varga was born in Lisbon.")
    prompt = fmt.prompt_ids("Where was Ilse Varga born?")
    assert ex.input_ids[: len(prompt)] == prompt
    assert ex.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert ex.labels[-1] == small_tokenizer.eos_token_id
    assert ex.labels[len(prompt) :] == ex.input_ids[len(prompt) :]
    assert small_tokenizer.decode(ex.input_ids[len(prompt) : -1]).strip() == "Ilse Varga was born in Lisbon."


# A Llama-3.x-shaped chat template (written for the tests): the date comes from ``date_string`` or, when
# none is passed, today's date; the system message goes in its own header block.
LLAMA3_LIKE = (
    "{{ bos_token }}{% if date_string is not defined %}{% set date_string = strftime_now('%d %b %Y') %}{% endif %}"
    "{% set sys = messages[0]['content'] if messages[0]['role'] == 'system' else '' %}"
    "[system]Today Date: {{ date_string }}\n\n{{ sys }}</s>"
    "{% for m in messages %}{% if m['role'] != 'system' %}[{{ m['role'] }}]\n\n{{ m['content'] | trim }}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}[assistant]\n\n{% endif %}"
)
# A Gemma-shaped template: refuses a system role.
NO_SYSTEM = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "<s>[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
)


def _chat_tokenizer(small_tokenizer, template):
    import copy

    tok = copy.deepcopy(small_tokenizer)
    tok.chat_template = template
    return tok


def test_chat_prompt_matches_the_reference_framework(small_tokenizer):
    """System message and date as the reference's Llama-3.x config; labels = the whole conversation's
    tokens after the generation-prompt's tokens; EOS (the template's end token here) ends the labels."""
    tok = _chat_tokenizer(small_tokenizer, LLAMA3_LIKE)
    fmt = QAFormatter(tok)
    assert fmt.use_chat and fmt.system_prompt == REFERENCE_SYSTEM_PROMPT
    prompt = fmt.prompt_text("Where was Ilse Varga born?")
    assert prompt == ("<s>[system]Today Date: 10 Apr 2025\n\nYou are a helpful assistant.</s>"
                      "[user]\n\nWhere was Ilse Varga born?</s>[assistant]\n\n")
    ex = fmt.encode("Where was Ilse Varga born?", "Ilse Varga was born in Lisbon.")
    whole = tok(prompt + "Ilse Varga was born in Lisbon.</s>", add_special_tokens=False)["input_ids"]
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert ex.input_ids == whole and ex.prompt_len == n_prompt
    assert ex.labels == [IGNORE_INDEX] * n_prompt + whole[n_prompt:]
    assert ex.labels[-1] == tok.eos_token_id and ex.labels.count(tok.eos_token_id) == 1
    # without the reference's date the template writes today's: not reproducible
    assert "10 Apr 2025" not in QAFormatter(tok, date_string=None).prompt_text("q?")
    assert "You are" not in QAFormatter(tok, system_prompt=None).prompt_text("q?")


def test_chat_template_without_system_role(small_tokenizer):
    fmt = QAFormatter(_chat_tokenizer(small_tokenizer, NO_SYSTEM))
    assert fmt.system_prompt is None
    assert fmt.prompt_text("hi?") == "<s>[user] hi?\n[assistant] "
    ex = fmt.encode("hi?", "hello")
    assert ex.input_ids[-1] == small_tokenizer.eos_token_id  # the template has no EOS: appended
    with pytest.raises(DataError, match="no chat template"):
        QAFormatter(small_tokenizer, template="chat")


def test_long_items_are_cut_and_get_their_eos_back(small_tokenizer):
    fmt = QAFormatter(small_tokenizer, max_length=20)
    prompt = fmt.prompt_ids("Where was Ilse Varga born?")
    ex = fmt.encode("Where was Ilse Varga born?", "Ilse Varga was born in Lisbon. " * 5)
    assert len(ex.input_ids) == 21 and ex.input_ids[-1] == small_tokenizer.eos_token_id  # cut at 20, EOS put back
    assert ex.input_ids[:20] == fmt.encode("Where was Ilse Varga born?", "Ilse Varga was born in Lisbon. " * 6).input_ids[:20]
    assert ex.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    with pytest.raises(DataError, match="question too long"):
        QAFormatter(small_tokenizer, max_length=len(prompt)).encode("Where was Ilse Varga born?", "x")


def test_collate_pads_both_sides(small_tokenizer):
    fmt = QAFormatter(small_tokenizer)
    exs = [fmt.encode("q?", "a"), fmt.encode("a longer question?", "a longer answer")]
    right = collate(exs, fmt.pad_id)
    left = collate(exs, fmt.pad_id, padding_side="left")
    n0 = len(exs[0].input_ids)
    assert right["attention_mask"][0].tolist()[:n0] == [1] * n0
    assert left["attention_mask"][0].tolist()[-n0:] == [1] * n0
    assert (right["labels"][0, n0:] == IGNORE_INDEX).all()
    assert right["input_ids"].shape == left["input_ids"].shape


def test_a_holdout_shares_no_question_with_forget_or_retain(tmp_path):
    """The calibration holdout stands for never-seen items: the forget set itself, or retained items, are refused."""
    f = load_qa(str(_write(tmp_path / "f.jsonl", [{"question": "Forgotten?", "answer": "a"}])))
    r = load_qa(str(_write(tmp_path / "r.jsonl", [{"question": "Kept?", "answer": "b"}])))
    h = load_qa(str(_write(tmp_path / "h.jsonl", [{"question": "Never seen?", "answer": "c"}])))
    check_holdout(h, f, r)
    with pytest.raises(DataError, match=r"--holdout f.jsonl shares 1 question\(s\) with the forget set, e.g. 'Forgotten\?'"):
        check_holdout(f, f, r, "--holdout f.jsonl")
    with pytest.raises(DataError, match=r"shares 1 question\(s\) with the retain set.*never trained on"):
        check_holdout(r, f, r)
    check_holdout(r, f)  # retain not given: not checked


def test_an_unreachable_hub_data_set_is_one_line_without_a_config_none(monkeypatch, tmp_path):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'org/data' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"^could not load org/data from the Hugging Face hub: the hub cannot be reached") as info:
        load_qa("org/data")
    assert "None" not in str(info.value).split("(")[0]
    with pytest.raises(DataError, match=r"^could not load org/data config 'forget10' from the Hugging Face hub"):
        load_qa("org/data:forget10")
