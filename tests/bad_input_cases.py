"""The cases of the bad-input catalogue (run by tests/test_bad_inputs.py): what a user can get wrong, on the
command line (:data:`CLI`) and from Python (:data:`API`), the one-line message each must end in, and its fix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


FORGET = [{"question": "Where was Ilse Varga born?", "answer": "Ilse Varga was born in Lisbon."},
          {"question": "What genre does Tomas Reed write?", "answer": "Tomas Reed writes science fiction."}]
RETAIN = [{"question": "What is the capital of France?", "answer": "The capital of France is Paris."},
          {"question": "What is 2 and 2?", "answer": "It is 4."}]


@dataclass
class Case:
    id: str
    what: str  # what the user did, for docs/errors.md
    make: Callable  # (files) -> CLI argv list, or a zero-argument callable for the Python API
    expect: str  # a regex the one-line message must match
    fix: str  # the fix, in words, for docs/errors.md
    out: str | None = None  # a path (in files) that must be left untouched


def _jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _text(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _cfg(root: Path, name: str, body) -> str:
    path = root / name
    path.write_text(json.dumps(body))
    return str(path)


def _api(fn: Callable, *args, **kwargs) -> Callable:
    return lambda: fn(*args, **kwargs)


def _moved_base_head(f) -> str:
    """A copy of the head whose recorded base is no longer there (moved or deleted)."""
    import shutil

    head = f["root"] / "moved_head"
    if not head.exists():
        shutil.copytree(f["head"], head)
        cfg = json.loads((head / "t3_config.json").read_text())
        cfg["base_model_name_or_path"] = str(f["root"] / "moved-model")
        (head / "t3_config.json").write_text(json.dumps(cfg))
    return str(head)


def _models(f):  # a base / retain model pair for compare (the random model twice)
    return ["--world", str(f["world"]), "--model", str(f["model"]), "--oracle", str(f["model"])]


CLI = [
    # ------------------------------------------------------------------ paths and files
    Case("eval-out-is-a-file", "`eval --out` names a file",
         lambda f: ["eval", "--model", str(f["model"]), "--out", str(f["root"] / "a_file")],
         r"--out .*a_file is a file; give a directory", "give a directory for the results"),
    Case("eval-reference-missing", "`--oracle-results` names a file that does not exist",
         lambda f: ["eval", "--model", str(f["model"]), "--oracle-results", str(f["root"] / "nope.json"), "--out", str(f["root"] / "o1")],
         r"nope.json does not exist", "check the path", out="o1"),
    Case("eval-reference-truncated", "`--oracle-results` is a truncated JSON file",
         lambda f: ["eval", "--model", str(f["model"]), "--oracle-results", str(f["truncated"]), "--out", str(f["root"] / "o2")],
         r"truncated.json is not valid JSON .*corrupt, recreate it", "recreate the file", out="o2"),
    Case("eval-reference-not-results", "`--oracle-results` is JSON but not TOFU results",
         lambda f: ["eval", "--model", str(f["model"]), "--oracle-results", str(f["notresults"]), "--out", str(f["root"] / "o3")],
         r"is not a TOFU results file", "give a TOFU_EVAL.json or a results directory", out="o3"),
    Case("eval-model-not-a-model", "`--model` is a directory without a model",
         lambda f: ["eval", "--model", str(f["root"] / "emptydir"), "--world", str(f["world"]), "--oracle-results", "none",
                    "--out", str(f["root"] / "o4")],
         r"holds no config.json, t3_config.json or other model config", "point --model at a model directory", out="o4"),
    Case("eval-corrupt-weights", "the model's model.safetensors is truncated",
         lambda f: ["eval", "--model", str(f["corrupt"]), "--world", str(f["world"]), "--oracle-results", "none",
                    "--out", str(f["root"] / "o5")],
         r"weights of .*corrupt are corrupt or incomplete .*copy or save the model again", "copy or save the model again",
         out="o5"),
    Case("generate-corrupt-weights", "`generate` with truncated weights",
         lambda f: ["generate", "--model", str(f["corrupt"]), "Where?"],
         r"corrupt or incomplete", "copy or save the model again"),
    Case("report-not-results", "`report` on a directory without results",
         lambda f: ["report", str(f["root"] / "emptydir"), "--out", str(f["root"] / "o6")],
         r"holds no TOFU_EVAL.json", "give directories written by t3unlearn eval", out="o6"),
    Case("compare-config-truncated", "`compare --config` is truncated JSON",
         lambda f: ["compare", "--config", str(f["truncated"]), "--out", str(f["root"] / "o7")],
         r"truncated.json is not valid JSON", "recreate the file", out="o7"),
    Case("compare-config-not-an-object", "`compare --config` holds a list",
         lambda f: ["compare", "--config", str(f["notresults"]), "--out", str(f["root"] / "o8")],
         r"must hold a JSON object", "start from `t3unlearn compare --print-config`", out="o8"),
    Case("compare-config-calibrate-not-a-bool", "`compare --config` sets T3's `calibrate` to a string",
         lambda f: ["compare", "--config", str(f["calib_cfg"]), "--out", str(f["root"] / "o7b")],
         r"methods.t3.params.calibrate must be true, false or an object of calibrate's settings .*, not 'yes'",
         "write true, false or an object such as {\"scales\": [0.5, 1]}", out="o7b"),
    Case("baseline-out-foreign-directory", "`baseline --out` is a non-empty directory of something else",
         lambda f: ["baseline", "npo", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--out", str(f["root"] / "foreign")],
         r"--out .*foreign is a non-empty directory that is not a baseline's output", "choose a new or empty directory",
         out="foreign"),
    Case("unlearn-out-foreign-directory", "`unlearn --out` is a non-empty directory of something else",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--out", str(f["root"] / "foreign")],
         r"non-empty directory that is not a T3 head", "choose a new or empty directory", out="foreign"),
    Case("unlearn-reference-without-calibrate", "`unlearn --pretrained` without `--calibrate`",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--out", str(f["root"] / "o-ref"), "--pretrained", str(f["model"])],
         r"--pretrained, --oracle and --perturbed belong to calibration: add --calibrate", "add --calibrate",
         out="o-ref"),
    Case("unlearn-perturbed-without-reference", "`unlearn --calibrate --perturbed` without a model to compare with",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--out", str(f["root"] / "o-pert"), "--calibrate", "--holdout", f["forget"], "--perturbed", f["forget"]],
         r"--perturbed goes with --pretrained or --oracle, or with a holdout set whose items carry perturbed answers",
         "--pretrained or --oracle", out="o-pert"),
    Case("unlearn-oracle-without-calibrate", "`unlearn --oracle` without `--calibrate`",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--out", str(f["root"] / "o-orc"), "--oracle", str(f["model"])],
         r"--pretrained, --oracle and --perturbed belong to calibration: add --calibrate", "add --calibrate",
         out="o-orc"),
    Case("unlearn-holdout-read-by-the-evaluation", "`unlearn --calibrate --holdout` names the holdout the split's evaluation reads",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", f"{f['world_cal']}:forget10", "--retain", f["retain"],
                    "--out", str(f["root"] / "o-hold"), "--calibrate", "--holdout", f"{f['world_cal']}:holdout10"],
         r"--holdout \S+/world-cal:holdout10 shares items with what the evaluation of forget10 reads \(3 of "
         r"\S+/world-cal:holdout10\); calibrate on never-seen items the evaluation does not read \(e.g. "
         r"\S+/world-cal:calibration\)\.", "calibrate on never-seen items the evaluation does not read", out="o-hold"),
    Case("unlearn-mia-tolerance-out-of-range", "`unlearn --calibrate --mia-tolerance 0.7`",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--out", str(f["root"] / "o-mia"), "--calibrate", "--holdout", f["forget"], "--mia-tolerance", "0.7"],
         r"--mia-tolerance is a distance from AUC 0.5 and must be in \[0, 0.5\]", "a value in [0, 0.5], e.g. 0.075",
         out="o-mia"),
    Case("unlearn-holdout-is-the-forget-set", "`unlearn --calibrate --holdout` names the forget set itself",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--out", str(f["root"] / "o-hf"), "--calibrate", "--holdout", f["forget"]],
         r"--holdout \S+forget.jsonl shares 2 question\(s\) with the forget set, e.g. 'Where was Ilse Varga born\?'; the "
         r"holdout must be items the model never trained on", "give items the model never trained on", out="o-hf"),
    Case("calibrate-holdout-in-retain", "`calibrate --holdout` names retained items",
         lambda f: ["calibrate", "--head", str(f["head"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--out", str(f["root"] / "o-hr"), "--holdout", f["retain"]],
         r"shares 2 question\(s\) with the retain set", "give items the model never trained on", out="o-hr"),
    Case("data-perturbed-not-a-list", "a holdout whose `perturbed_answer` is one string, not a list",
         lambda f: ["calibrate", "--head", str(f["head"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--out", str(f["root"] / "o-hp"), "--holdout", _jsonl(f["root"] / "pert-string.jsonl", [
                        {"question": "Who is Lena Ruiz?", "answer": "A poet.", "paraphrased_answer": "She is a poet.",
                         "perturbed_answer": "A painter."}])],
         r"holdout set \S+pert-string.jsonl: item 0's 'perturbed_answer' is str, not a list of texts",
         'write it as a list, `["...", "..."]`', out="o-hp"),
    Case("unlearn-model-is-a-head", "`unlearn --model` names a T3 head, not its base",
         lambda f: ["unlearn", "--model", str(f["head"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--out", str(f["root"] / "o-mh")],
         r"--model \S+/head is a T3 head, not a base model: train a new head over its base \(--model \S+/model\), or "
         r"update this one with --head \S+/head --add-forget SOURCE", "give its base as --model, or update it with --head",
         out="o-mh"),
    Case("unlearn-lr-zero", "`unlearn --lr 0` (checked before the model is loaded: here its weights are corrupt)",
         lambda f: ["unlearn", "--model", str(f["corrupt"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--out", str(f["root"] / "o-lr"), "--lr", "0"],
         r"learning rate must be > 0, not 0.0", "a positive learning rate", out="o-lr"),
    Case("calibrate-pretrained-is-the-base", "`calibrate --pretrained` names the model being unlearned",
         lambda f: ["calibrate", "--head", str(f["head"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--out", str(f["root"] / "o-pb"), "--holdout", _jsonl(f["root"] / "unseen.jsonl", [
                        {"question": "Who is Lena Ruiz?", "answer": "A poet."}]), "--pretrained", str(f["model"])],
         r"--pretrained \S+/model is the model being unlearned, which saw the forget set; give the checkpoint it was "
         r"fine-tuned from", "give the checkpoint it was fine-tuned from", out="o-pb"),
    Case("update-oracle-is-the-base", "`unlearn --head H --add-forget ... --calibrate --oracle` names H's own base",
         lambda f: ["unlearn", "--head", str(f["head"]), "--add-forget", _jsonl(f["root"] / "feb.jsonl", [
                    {"question": "Who is Lena Ruiz?", "answer": "A poet."}]), "--calibrate", "--out",
                    str(f["root"] / "o-ob"), "--holdout", _jsonl(f["root"] / "unseen2.jsonl", [
                        {"question": "Who is Mira Sato?", "answer": "A painter."}]), "--oracle", str(f["model"])],
         r"--oracle \S+/model is the model being unlearned, which saw the forget set; give a model trained without",
         "give a model trained without the forget set", out="o-ob"),
    Case("unlearn-update-new-head", "`unlearn --update finetune` while making a new head",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--out", str(f["root"] / "o-upd"), "--update", "finetune"],
         r"--update finetune applies to updating a head \(--head DIR --add-forget SOURCE\); a new head is trained from "
         r"scratch: drop --update", "drop --update, or update a head with --head", out="o-upd"),
    Case("unlearn-forget-with-id", "`unlearn --forget feb=feb.jsonl` (a request id on --forget)",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", f"feb={f['forget']}", "--retain", f["retain"],
                    "--out", str(f["root"] / "o-rid")],
         r"--forget feb=\S+forget.jsonl is not a data source: request ids go with --request-id ID for a new head "
         r"\(--forget \S+forget.jsonl --request-id feb\), or with --add-forget ID=SOURCE on an existing head",
         "--request-id ID, or --add-forget ID=SOURCE on a head", out="o-rid"),
    Case("baseline-idk-missing", "`baseline idkdpo --idk` names a missing file",
         lambda f: ["baseline", "idkdpo", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--idk", str(f["root"] / "idk.txt"), "--out", str(f["root"] / "o9")],
         r"idk file .*idk.txt does not exist", "check the path", out="o9"),
    # ------------------------------------------------------------------ data sets
    Case("data-missing-source", "a data set path that does not exist",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", str(f["root"] / "nope.jsonl"), "--retain", f["retain"],
                    "--out", str(f["root"] / "o10")],
         r"is neither an existing file or directory nor a hub id", "check the path", out="o10"),
    Case("data-empty-file", "an empty forget set file",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", str(f["empty"]), "--retain", f["retain"],
                    "--out", str(f["root"] / "o11")],
         r"empty.jsonl is empty; it must hold question/answer items", "fill the file", out="o11"),
    Case("data-missing-field", "items without an `answer`",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", f["noanswer"], "--retain", f["retain"],
                    "--out", str(f["root"] / "o12")],
         r"lacks field\(s\) answer .*each item needs a 'question' and an 'answer'", "add the field", out="o12"),
    Case("data-blank-answer", "an item whose answer is blank",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", f["blank"], "--retain", f["retain"],
                    "--out", str(f["root"] / "o13")],
         r"item 0 has an empty 'answer'; fill it in or drop the item", "fill it in or drop the item", out="o13"),
    Case("data-not-text", "an item whose question is a number, not text",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", _jsonl(f["root"] / "number.jsonl", FORGET[:1] + [
                    {"question": 7, "answer": "Seven."}]), "--retain", f["retain"], "--out", str(f["root"] / "o13b")],
         r"forget set \S+number.jsonl: item 1's 'question' is an int, not text; every question and answer must be a string",
         "write it as text, in quotes", out="o13b"),
    Case("data-bad-json-line", "a data file with a truncated line",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", _text(f["root"] / "cut.jsonl", '{"question": "Q?", '
                    '"answer": "A."}\n{"question": "Who?", "ans'), "--retain", f["retain"], "--out", str(f["root"] / "o13c")],
         r"cut.jsonl is not valid JSON: line 2, column 22 \(Unterminated string\); fix or remove that line",
         "fix or remove that line", out="o13c"),
    Case("data-forget-retain-overlap", "forget and retain sets share a question",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["overlap"],
                    "--out", str(f["root"] / "o14")],
         r"overlap in 1 question\(s\).*remove them from the retain set", "remove them from the retain set", out="o14"),
    Case("data-unknown-benchmark", "`world-huge:forget10` (no such preset)",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", "world-huge:forget10", "--retain", f["retain"],
                    "--out", str(f["root"] / "o15")],
         r"unknown benchmark 'world-huge'", "use world, world-tiny, tofu or a world directory", out="o15"),
    Case("eval-unknown-world-model", "`--model world:nope`",
         lambda f: ["eval", "--model", "world:nope", "--out", str(f["root"] / "o16")],
         r"has no model 'nope'; its models are pretrained, full", "name one of the world's models", out="o16"),
    Case("eval-unknown-world", "`eval --world nope` (neither a preset nor a world's directory)",
         lambda f: ["eval", "--model", str(f["model"]), "--world", "nope", "--out", str(f["root"] / "o16b")],
         r"--world must be a world preset \(default, tiny\) or a built world's directory, not 'nope'",
         "name a preset or a world directory", out="o16b"),
    Case("eval-model-of-another-world", "`eval --model world-tiny:full --world DIR` (the model names another world)",
         lambda f: ["eval", "--model", "world-tiny:full", "--world", str(f["world"]), "--out", str(f["root"] / "o16d")],
         r"--model world-tiny:full is a model of world-tiny, not of --world .*; drop --world",
         "drop --world (the model names its world)", out="o16d"),
    Case("demo-unknown-preset", "`demo --preset huge`",
         lambda f: ["demo", "--preset", "huge", "--out", str(f["root"] / "o16c")],
         r"--preset must be a world preset \(default, tiny\) or a built world's directory, not 'huge'",
         "name a preset or a world directory", out="o16c"),
    Case("eval-unknown-split", "`--split forget7`",
         lambda f: ["eval", "--model", str(f["model"]), "--split", "forget7", "--out", str(f["root"] / "o17")],
         r"unknown split 'forget7'; use forget01, forget05 or forget10", "use forget01, forget05 or forget10", out="o17"),
    # ------------------------------------------------------------------ numbers and ranges
    Case("eval-batch-size-zero", "`eval --batch-size 0`",
         lambda f: ["eval", "--model", str(f["model"]), "--batch-size", "0", "--out", str(f["root"] / "o18")],
         r"--batch-size and --max-new-tokens must be >= 1", "give 1 or more", out="o18"),
    Case("probe-max-new-tokens-zero", "`probe --max-new-tokens 0`",
         lambda f: ["probe", "--model", str(f["model"]), "--world", str(f["world"]), "--max-new-tokens", "0",
                    "--out", str(f["root"] / "o18p")],
         r"argument --max-new-tokens: must be >= 1, got 0", "give 1 or more", out="o18p"),
    Case("threads-negative", "`--threads -1`",
         lambda f: ["eval", "--model", str(f["model"]), "--threads", "-1", "--out", str(f["root"] / "o19")],
         r"--threads must be >= 1 \(or 0 for torch's default, or auto\), not -1", "a number >= 1, 0 or auto", out="o19"),
    Case("threads-not-a-number", "`--threads many`",
         lambda f: ["baseline", "npo", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--threads", "many", "--out", str(f["root"] / "o20")],
         r"--threads must be a number, 0 \(torch's default\) or auto, not 'many'", "a number, 0 or auto", out="o20"),
    Case("demo-jobs-zero", "`demo --jobs 0`",
         lambda f: ["demo", "--preset", "tiny", "--jobs", "0", "--out", str(f["root"] / "o20b")],
         r"--jobs must be >= 1 \(1 = one step after the other\) or auto, not 0", "a number >= 1 or auto", out="o20b"),
    Case("unlearn-temperature-zero", "`unlearn --temperature 0`",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--temperature", "0", "--out", str(f["root"] / "o21")],
         r"temperature must be > 0", "T > 0; 1 is plain guidance", out="o21"),
    Case("compare-seeds-zero", "`compare --seeds 0`",
         lambda f: ["compare", *_models(f), "--seeds", "0", "--out", str(f["root"] / "o22")],
         r"--seeds must be >= 1, not 0", "give 1 or more", out="o22"),
    Case("compare-jobs-zero", "`compare --jobs 0`",
         lambda f: ["compare", *_models(f), "--jobs", "0", "--out", str(f["root"] / "o23")],
         r"--jobs must be >= 1, not 0", "give 1 or more", out="o23"),
    Case("compare-unknown-method", "`compare --methods t3,sgd`",
         lambda f: ["compare", *_models(f), "--methods", "t3,sgd", "--out", str(f["root"] / "o24")],
         r"--methods has unknown method\(s\) sgd; choose from t3, cg", "pick from the list", out="o24"),
    Case("compare-empty-split", "`compare --split ,`",
         lambda f: ["compare", "--split", ",", "--out", str(f["root"] / "o25")],
         r"--split is empty; give e.g. forget10", "give e.g. forget10", out="o25"),
    Case("baseline-lr-zero", "`baseline npo --lr 0`",
         lambda f: ["baseline", "npo", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--lr", "0", "--out", str(f["root"] / "o26")],
         r"lr must be > 0, not 0.0", "a positive learning rate", out="o26"),
    # ------------------------------------------------------------------ settings and keys
    Case("compare-config-typo", "a typo in a compare config key (`utility_tolerence`)",
         lambda f: ["compare", "--config", _cfg(f["root"], "typo.json", {"selection": {"utility_tolerence": 0.1}}),
                    "--out", str(f["root"] / "o27")],
         r"selection: unknown key 'utility_tolerence' \(did you mean 'utility_tolerance'\?\); known: eval, metric",
         "spell the key as listed", out="o27"),
    Case("compare-config-wrong-type", "a compare config value of the wrong type",
         lambda f: ["compare", "--config", _cfg(f["root"], "type.json", {"isolate": "yes"}), "--out", str(f["root"] / "o28")],
         r"isolate must be true or false, not 'yes'", "use the type named", out="o28"),
    Case("compare-config-out-of-range", "a negative utility tolerance",
         lambda f: ["compare", "--config", _cfg(f["root"], "range.json", {"selection": {"utility_tolerance": -1}}),
                    "--out", str(f["root"] / "o29")],
         r"selection.utility_tolerance must be >= 0, not -1", "give 0 or more", out="o29"),
    Case("compare-config-peeks", "selecting sweep settings by forget quality",
         lambda f: ["compare", "--config", _cfg(f["root"], "peek.json", {"selection": {"metric": "forget_quality"}}),
                    "--out", str(f["root"] / "o30")],
         r"may not use the retain model's forget-set results .*peek at the oracle", "select by forget_Q_A_Prob",
         out="o30"),
    Case("compare-config-unknown-method-setting", "a setting a method does not have (`betta`)",
         lambda f: ["compare", "--config", _cfg(f["root"], "param.json", {"methods": {"npo": {"params": {"betta": 0.2}}}}),
                    "--out", str(f["root"] / "o31")],
         r"methods.npo.params: unknown key 'betta' \(did you mean 'beta'\?\)", "spell the setting as listed", out="o31"),
    Case("baseline-unknown-method", "`baseline sgd`",
         lambda f: ["baseline", "sgd", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--out", str(f["root"] / "o32")],
         r"unknown baseline 'sgd'; choose one of gradascent", "pick from the list", out="o32"),
    Case("baseline-set-syntax", "`--set beta` without a value",
         lambda f: ["baseline", "npo", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--set", "beta", "--out", str(f["root"] / "o33")],
         r"--set takes KEY=VALUE, not 'beta'", "write KEY=VALUE", out="o33"),
    Case("baseline-unknown-setting", "`baseline npo --set betta=1`",
         lambda f: ["baseline", "npo", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--set", "betta=1", "--out", str(f["root"] / "o34")],
         r"NPO has no setting\(s\) betta; it takes beta, gamma, alpha, retain_loss", "use one of the listed settings",
         out="o34"),
    Case("baseline-train-config-typo", "`--train-config` with an unknown key",
         lambda f: ["baseline", "npo", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--train-config", _cfg(f["root"], "train.json", {"learning_rate": 1e-4}), "--out", str(f["root"] / "o35")],
         r"unknown key 'learning_rate'; known: lr, weight_decay", "spell the key as listed", out="o35"),
    Case("baseline-needs-forget", "`baseline npo` without `--forget`",
         lambda f: ["baseline", "npo", "--model", str(f["model"]), "--retain", f["retain"], "--out", str(f["root"] / "o36")],
         r"NPO needs --forget", "give the forget set", out="o36"),
    Case("world-train-unknown-model", "`world train --models full,foo`",
         lambda f: ["world", "train", "--world", "tiny", "--models", "full,foo"],
         r"unknown model name\(s\) foo; choose from pretrained, full", "pick from the list"),
    Case("eval-world-with-tofu", "`--world` with `--benchmark tofu`",
         lambda f: ["eval", "--model", str(f["model"]), "--benchmark", "tofu", "--world", "tiny", "--out", str(f["root"] / "o37")],
         r"--world applies to --benchmark world", "drop --world (TOFU's copy is $T3UNLEARN_TOFU_DIR)", out="o37"),
    # ------------------------------------------------------------------ heads that do not fit
    Case("head-on-another-base", "a T3 head put on a base it was not trained on",
         lambda f: ["generate", "--model", str(f["other"]), "--head", str(f["head"]), "Where?"],
         r"was trained on a base with hidden size 32 .*but this base has hidden size 16.*use the base it was trained on",
         "use the base the head was trained on"),
    Case("head-base-moved", "`generate --model HEAD` after its base was moved away",
         lambda f: ["generate", "--model", _moved_base_head(f), "Where?"],
         r"the base model \S+/moved-model recorded in \S+/moved_head/t3_config.json does not exist here \(moved or "
         r"deleted\?\); give the base explicitly: --model BASE --head \S+/moved_head", "give the base with --model"),
    Case("head-dir-is-not-a-head", "`--head` names a directory that is no head",
         lambda f: ["generate", "--model", str(f["model"]), "--head", str(f["root"] / "emptydir"), "Where?"],
         r"holds no t3_config.json; it is not a saved T3 head", "give a directory written by unlearn"),
    Case("head-corrupt-weights", "a T3 head whose head.safetensors is truncated",
         lambda f: ["generate", "--model", str(f["model"]), "--head", str(f["corrupt_head"]), "Where?"],
         r"head.safetensors is corrupt or not a safetensors file .*save the head again", "save the head again"),
    Case("head-truncated-config", "a T3 head whose t3_config.json is truncated",
         lambda f: ["generate", "--model", str(f["model"]), "--head", str(f["bad_config_head"]), "Where?"],
         r"t3_config.json is corrupt or not a T3 config .*save the head again", "save the head again"),
    Case("temperature-without-head", "`generate --temperature` without a head",
         lambda f: ["generate", "--model", str(f["model"]), "--temperature", "2", "Where?"],
         r"--temperature is T3's guidance and needs a head: add --head DIR", "add --head"),
    Case("support-out-of-range", "`generate --support 2` (the gate's quantile is in (0, 1])",
         lambda f: ["generate", "--model", str(f["model"]), "--head", str(f["head"]), "--support", "2", "Where?"],
         r"argument --support: support is a quantile of the training positions' distances and must be in \(0, 1\] "
         r"\(e.g. 0.95\), or none to turn it off; not 2", "give a quantile such as 0.95"),
    Case("floor-not-negative", "`generate --floor 2` (the head's floor is a negative logit)",
         lambda f: ["generate", "--model", str(f["model"]), "--head", str(f["head"]), "--floor", "2", "Where?"],
         r"argument --floor: floor is a head logit below which tokens are not pushed further and must be < 0 "
         r"\(e.g. -6.5: at most s x 6.5 nats per token\), or none to turn it off; not 2", "give a negative logit such as -6.5"),
    Case("support-on-an-old-head", "`--support` with a head saved before heads carried a support gate",
         lambda f: ["generate", "--model", str(f["model"]), "--head", str(f["old_head"]), "--support", "0.95", "Where?"],
         r"this head has no support statistics \(it was saved by an earlier t3unlearn\); retrain it with 't3unlearn "
         r"unlearn', or leave the support knob unset \(--support none\)", "retrain the head, or drop --support"),
    # ------------------------------------------------------------------ your own checkpoint (issue 33)
    Case("model-path-typo", "`--model` with a typo in a local directory name",
         lambda f: ["unlearn", "--model", str(f["root"] / "modle"), "--forget", f["forget"], "--retain", f["retain"],
                    "--out", str(f["root"] / "o41")],
         r"no such model directory .*modle; did you mean .*/model\?", "fix the path as suggested", out="o41"),
    Case("model-dir-missing", "`--model` names a local directory that does not exist",
         lambda f: ["eval", "--model", "./models/nowhere", "--out", str(f["root"] / "o42")],
         r"no such model directory ./models/nowhere; check the path \(a hub id has the form ORG/NAME\)", "check the path",
         out="o42"),
    Case("model-hub-offline", "a hub id while HF_HUB_OFFLINE is set (not cached)",
         lambda f: ["generate", "--model", "someorg/some-model", "Where?"],
         r"model someorg/some-model is not a local directory, and HF_HUB_OFFLINE is set so the Hugging Face hub is not asked",
         "give a local directory, or unset HF_HUB_OFFLINE"),
    Case("model-config-invalid", "the model's config.json is not valid JSON",
         lambda f: ["generate", "--model", str(f["badcfg"]), "Where?"],
         r"badcfg/config.json is not valid JSON .*the model directory is corrupt, copy or save the model again",
         "copy or save the model again"),
    Case("model-file-not-dir", "`--model` names a file",
         lambda f: ["generate", "--model", f["forget"], "Where?"],
         r"model .*forget.jsonl is a file; give the model's directory", "give the model's directory"),
    Case("unlearn-model-without-tokenizer", "`unlearn` with a model directory that has no tokenizer files",
         lambda f: ["unlearn", "--model", str(f["notok"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--out", str(f["root"] / "o43")],
         r"notok has no tokenizer files \(tokenizer.json, tokenizer_config.json, tokenizer.model ...\); copy them",
         "copy the tokenizer files next to the model", out="o43"),
    Case("eval-model-without-tokenizer", "`eval` with a model directory that has no tokenizer files",
         lambda f: ["eval", "--model", str(f["notok"]), "--world", str(f["world"]), "--oracle-results", "none",
                    "--out", str(f["root"] / "o44")],
         r"notok has no tokenizer files", "copy the tokenizer files next to the model", out="o44"),
    Case("model-encoder-decoder", "`--model` is an encoder-decoder (T5)",
         lambda f: ["generate", "--model", str(f["t5"]), "Where?"],
         r"t5 is a t5 model, which transformers cannot load as a causal \(decoder-only\) LM", "use a decoder-only model"),
    Case("device-unavailable", "`--device cuda` where torch sees no such GPU",
         lambda f: ["generate", "--model", str(f["model"]), "--device", "cuda:7", "Where?"],
         r"--device cuda:7: (this torch \(.*\) sees no CUDA GPU; use --device cpu|there are \d CUDA GPU\(s\))",
         "use --device cpu (or an existing GPU)"),
    Case("data-not-utf8", "a data file with a byte that is not UTF-8 (Latin-1)",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", str(f["latin1"]), "--retain", f["retain"],
                    "--out", str(f["root"] / "o45")],
         r"latin1.jsonl is not UTF-8 text: line 1 holds the byte 0xe3; re-save the file as UTF-8", "re-save as UTF-8",
         out="o45"),
    Case("head-on-another-checkpoint", "a head on a base of the same shape with other weights (base vs instruct)",
         lambda f: ["generate", "--model", str(f["twin"]), "--head", str(f["head"]), "Where?"],
         r"the head in .*head was trained on another base: .*model with fingerprint \w+, this one has \w+; its weights "
         r"differ .*add --force", "use the head's own base, or --force if they are the same model"),
    Case("eval-head-on-another-checkpoint", "`eval` of a head on a same-shape base with other weights",
         lambda f: ["eval", "--model", str(f["twin"]), "--head", str(f["head"]), "--world", str(f["world"]),
                    "--oracle-results", "none", "--out", str(f["root"] / "o46")],
         r"was trained on another base: .*add --force", "use the head's own base, or --force", out="o46"),
    Case("serve-no-base-nothing", "`serve --no-base` with no head and no admin key (nothing could ever be served)",
         lambda f: ["serve", "--model", str(f["model"]), "--no-base", "--port", "0", "--threads", "1"],
         r"--no-base without --head would serve nothing.*give --head \[NAME=\]DIR, or --admin-key",
         "give --head or --admin-key (or drop --no-base)"),
    Case("serve-head-on-another-checkpoint", "`serve` a head over a same-shape base with other weights",
         lambda f: ["serve", "--model", str(f["twin"]), "--head", f"h={f['head']}", "--port", "0", "--threads", "1"],
         r"the head in .*head was trained on another base: .*add --force", "serve it over its own base, or --force"),
    Case("chat-head-on-plain-base", "a head trained with a chat template on a base whose tokenizer has none",
         lambda f: ["generate", "--model", str(f["model"]), "--head", str(f["chat_head"]), "Where?"],
         r"chat_head was trained on chat-formatted prompts, but this base's tokenizer has no chat template",
         "use the base the head was trained on"),
    Case("serve-plain-head-on-chat-base", "`serve` a head trained on plain prompts over a base with a chat template",
         lambda f: ["serve", "--model", str(f["chatmodel"]), "--head", f"h={f['head']}", "--force-heads", "--port", "0",
                    "--threads", "1"],
         r"was trained on plain prompts .*but this server formats prompts as chat",
         "serve it over the base (and tokenizer) it was trained with"),
    Case("scale-negative", "`--scale -5` (it would pull answers toward the forget set)",
         lambda f: ["generate", "--model", str(f["model"]), "--head", str(f["head"]), "--scale", "-5", "Where?"],
         r"scale must be >= 0 \(0: no tilt; a negative s pulls answers toward the forget set", "a scale >= 0"),
    Case("unlearn-abbreviated-option", "`unlearn --epoc 3` (an abbreviation or typo of --epochs)",
         lambda f: ["unlearn", "--model", str(f["model"]), "--epoc", "3"],
         r"unrecognized arguments: --epoc 3; did you mean --epochs\?", "spell the option out"),
    Case("eval-misspelled-option", "`eval --limt 5`",
         lambda f: ["eval", "--model", str(f["model"]), "--limt", "5", "--out", str(f["root"] / "o47")],
         r"unrecognized arguments: --limt 5; did you mean --limit\?", "spell the option out"),
    Case("unlearn-out-read-only", "`unlearn --out` in a directory the user may not write",
         lambda f: ("read-only", ["unlearn", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["retain"],
                                  "--out", str(f["root"] / "ro" / "head")]),
         r"--out .*ro/head cannot be written \(.*ro is read-only for you\); choose a writable directory",
         "choose a writable --out", out="ro"),
    Case("eval-out-read-only", "`eval --out` in a directory the user may not write",
         lambda f: ("read-only", ["eval", "--model", str(f["model"]), "--out", str(f["root"] / "ro" / "results")]),
         r"--out .*ro/results cannot be written", "choose a writable --out", out="ro"),
    Case("unlearn-out-existing-head", "`unlearn --out` names an existing head",
         lambda f: ["unlearn", "--model", str(f["model"]), "--forget", f["forget"], "--retain", f["retain"],
                    "--out", str(f["existing_head"])],
         r"--out .*existing_head already holds a T3 head \(and its request history\); add --overwrite to replace it",
         "add --overwrite, or update it with --head", out="existing_head"),
    Case("attn-implementation-unknown", "`--attn-implementation flash`",
         lambda f: ["generate", "--model", str(f["model"]), "--attn-implementation", "flash", "Where?"],
         r"argument --attn-implementation: invalid choice: 'flash'", "pick one of the listed kernels"),
    # ------------------------------------------------------------------ usage
    Case("usage-missing-option", "`eval` without `--out`",
         lambda f: ["eval", "--model", str(f["model"])],
         r"the following arguments are required: --out \(see 't3unlearn eval --help'\)", "add the option"),
    Case("usage-not-an-integer", "`compare --seeds two`",
         lambda f: ["compare", "--seeds", "two"],
         r"argument --seeds: invalid int value: 'two'", "give a number"),
    # ------------------------------------------------------------------ the operating system
    Case("unreadable-file", "a file the user may not read",
         lambda f: ("unreadable", ["eval", "--model", str(f["model"]), "--oracle-results", str(f["root"] / "results"),
                                   "--world", str(f["world"]), "--out", str(f["root"] / "o38")]),
         r"Permission denied: .*TOFU_EVAL.json; check its permissions, or choose another path", "fix the permissions",
         out="o38"),
    Case("disk-full", "the disk fills up while a report is written",
         lambda f: ("disk full", ["report", str(f["root"] / "results"), "--out", str(f["root"] / "o39")]),
         r"No space left on device: .*o39/report.md; the disk is full; free some space", "free space, rerun", out="o39"),
]


API = [
    Case("api-data-missing", "`load_qa` of a missing file",
         lambda f: _api(__import__("t3unlearn.data", fromlist=["load_qa"]).load_qa, str(f["root"] / "nope.jsonl")),
         r"neither an existing file or directory nor a hub id", "check the path"),
    Case("api-load-benchmark-model", "`load_lm('world:full')`: a benchmark's model name, not resolved",
         lambda f: _api(_import("t3unlearn.lm", "load_lm"), "world:full"),
         r"'world:full' names a model of an embedded benchmark; resolve it first with t3unlearn.benchmarks.resolve_model",
         "resolve it with resolve_model, or give the model's directory"),
    Case("api-compare-config-typo", "`load_compare_config` with a typo",
         lambda f: _api(_import("t3unlearn.experiments.compare", "load_compare_config"), {"selection": {"utility_tolerence": 0.1}}),
         r"config: selection: unknown key 'utility_tolerence' \(did you mean 'utility_tolerance'\?\)", "spell the key as listed"),
    Case("api-baseline-config-type", "`BaselineConfig.from_dict({'epochs': '10'})`",
         lambda f: _api(_import("t3unlearn.baselines", "BaselineConfig").from_dict, {"epochs": "10"}),
         r"training settings: epochs must be an integer, not '10'", "give an integer"),
    Case("api-baseline-config-both-precisions", "bf16 and fp16 together",
         lambda f: _api(_import("t3unlearn.baselines", "BaselineConfig").from_dict, {"bf16": True, "fp16": True}),
         r"choose one of bf16 and fp16", "choose one"),
    Case("api-baseline-scheduler", "an unknown scheduler",
         lambda f: _api(_import("t3unlearn.baselines", "BaselineConfig").from_dict, {"scheduler": "linaer"}),
         r"unknown scheduler 'linaer'; transformers has linear, cosine", "pick a transformers scheduler"),
    Case("api-baseline-no-tokenizer", "`unlearn_baseline` with an in-memory model and no tokenizer",
         lambda f: _api(_import("t3unlearn.baselines", "unlearn_baseline"), "npo", _random_model(), FORGET, RETAIN),
         r"pass the tokenizer along with an in-memory model", "pass tokenizer="),
    Case("api-uld-needs-a-directory", "`train_uld` saving a ULD model of an in-memory base",
         lambda f: _api(_import("t3unlearn.baselines", "train_uld"), _random_model(), FORGET, RETAIN, f["root"] / "uld"),
         r"to save a ULD model, give the base as a directory", "give the base as a directory"),
    Case("api-uld-not-a-uld-dir", "`ULDForCausalLM.from_pretrained` of a plain model",
         lambda f: _api(_import("t3unlearn.baselines", "ULDForCausalLM").from_pretrained, f["model"]),
         r"holds no uld_config.json; it is not a saved ULD model", "give a ULD directory"),
    Case("api-results-truncated", "`EvalResults.load` of a truncated file",
         lambda f: _api(_import("t3unlearn.eval.results", "EvalResults").load, f["truncated"]),
         r"is not valid JSON .*recreate it", "recreate the file"),
    Case("api-threads", "`choose_threads('many')`",
         lambda f: _api(_import("t3unlearn.io", "choose_threads"), "many"),
         r"^threads must be a number, 0 \(torch's default\) or auto, not 'many'", "a number, 0 or auto"),
    Case("api-compare-seeds", "`compare(seeds=0)`",
         lambda f: _api(_import("t3unlearn.experiments.compare", "compare"), seeds=0, out=f["root"] / "o40"),
         r"^seeds must be >= 1, not 0", "give 1 or more"),
    Case("api-load-corrupt-model", "`load_model` of truncated weights",
         lambda f: _api(_import("t3unlearn.lm", "load_model"), str(f["corrupt"]), device="cpu"),
         r"corrupt or incomplete", "copy or save the model again"),
    Case("api-load-model-typo", "`load_model` of a mistyped local directory",
         lambda f: _api(_import("t3unlearn.lm", "load_model"), str(f["root"] / "modle"), device="cpu"),
         r"no such model directory .*modle; did you mean .*/model\?", "fix the path as suggested"),
    Case("api-head-on-another-checkpoint", "`T3ForCausalLM.from_pretrained` with a same-shape base of other weights",
         lambda f: _api(_import("t3unlearn", "T3ForCausalLM").from_pretrained, str(f["head"]), base_model=str(f["twin"]),
                        device="cpu"),
         r"was trained on another base: .*\(force=True\) if they are the same model", "pass force=True only if they are"),
    Case("api-guidance-negative-scale", "`Guidance(scale=-5)`",
         lambda f: _api(_import("t3unlearn.t3.config", "Guidance"), scale=-5),
         r"^scale must be >= 0", "a scale >= 0"),
    Case("api-evaluate-missing-sets", "`evaluate` with data missing sets",
         lambda f: _api(_import("t3unlearn.eval.runner", "evaluate"), None, data={}),
         r"evaluation data lacks the forget, retain", "pass every set load_eval_data returns"),
]


def _import(module: str, name: str):
    import importlib

    return getattr(importlib.import_module(module), name)


def _random_model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2))
