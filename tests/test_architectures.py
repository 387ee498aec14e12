"""The architecture matrix: a tiny random-initialised model of every family a user is likely to bring (Llama,
GPT-2, Qwen2, Mistral, GPT-NeoX, Phi-3, Gemma-2, Gemma-3 and its multimodal wrapper, OPT with a projected
output, a sentencepiece-only tokenizer), each saved to a directory and run through the command line as a user
would: unlearn -> generate -> eval -> serve. Seconds per family; offline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
             max_position_embeddings=128)
GEMMA = dict(SMALL, head_dim=8, sliding_window=16)
FAMILIES = {
    "llama": ("llama", SMALL),
    "gpt2": ("gpt2", dict(n_embd=16, n_layer=1, n_head=2, n_positions=128)),
    "qwen2": ("qwen2", SMALL),
    "mistral": ("mistral", dict(SMALL, sliding_window=None)),
    "gpt_neox": ("gpt_neox", dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  max_position_embeddings=128)),
    "phi3": ("phi3", SMALL),
    "gemma2": ("gemma2", GEMMA),
    "gemma3": ("gemma3_text", GEMMA),
    "gemma3_multimodal": ("gemma3", None),  # the image-text wrapper (text_config + vision_config)
    "opt_projected": ("opt", dict(hidden_size=16, ffn_dim=32, num_hidden_layers=1, num_attention_heads=2,
                                  word_embed_proj_dim=8, max_position_embeddings=128)),  # OPT-350m's shape
    "llama_sentencepiece": ("llama", SMALL),  # tokenizer.model only
}

_CORPUS = ["Question: Where was Ilse Varga born?\nAnswer: Ilse Varga was born in Lisbon.",
           "Question: What genre does Tomas Reed write?\nAnswer: Tomas Reed writes science fiction.",
           "Question: What is the capital of France?\nAnswer: The capital of France is Paris."]


def _config(kind: str, settings, tok):
    from transformers import AutoConfig

    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if settings is None:  # Gemma-3's multimodal wrapper: a tiny text model and a tiny SigLIP vision tower
        text = dict(GEMMA, model_type="gemma3_text", **ids)
        vision = dict(model_type="siglip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, image_size=28, patch_size=14)
        return AutoConfig.for_model("gemma3", text_config=text, vision_config=vision, mm_tokens_per_image=4,
                                    image_token_index=len(tok) - 1, boi_token_index=len(tok) - 2, eoi_token_index=len(tok) - 3,
                                    **{k: v for k, v in ids.items() if k != "vocab_size"})
    return AutoConfig.for_model(kind, **settings, **ids)


def _sentencepiece_tokenizer(root: Path):
    """A directory holding only tokenizer.model (sentencepiece), as many Llama / Mistral checkpoints ship."""
    spm = pytest.importorskip("sentencepiece")
    from transformers import AutoTokenizer

    text = root / "corpus.txt"
    text.write_text("\n".join(_CORPUS * 30))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(root / "tokenizer"), vocab_size=400,
                                   model_type="bpe", bos_id=1, eos_id=2, unk_id=0, pad_id=3, byte_fallback=True,
                                   minloglevel=2)
    text.unlink()
    (root / "tokenizer.vocab").unlink()
    return AutoTokenizer.from_pretrained(str(root))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from test_eval_runner import build_fake_benchmark

    root = tmp_path_factory.mktemp("arch-world")
    build_fake_benchmark(root)
    return root


def _build(name: str, root: Path, small_tokenizer) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    kind, settings = FAMILIES[name]
    path = root / name
    path.mkdir()
    tok = _sentencepiece_tokenizer(path) if name == "llama_sentencepiece" else small_tokenizer
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(kind, settings, tok))
    model.save_pretrained(path)
    if name != "llama_sentencepiece":
        tok.save_pretrained(path)
    return path


def _run(argv) -> str:
    from t3unlearn.commands.main import main

    assert main(argv) == 0, argv


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_unlearn_generate_eval_serve(name, small_tokenizer, bench, tmp_path, capsys):
    from t3unlearn.lm import load_tokenizer

    model = _build(name, tmp_path, small_tokenizer)
    if name == "llama_sentencepiece":  # its own vocabulary, read from tokenizer.model alone
        assert sorted(p.name for p in model.iterdir() if "token" in p.name) == ["tokenizer.model"]
        assert len(load_tokenizer(str(model))) == 400
    data = tmp_path / "data"
    data.mkdir()
    forget, retain = f"{bench}:forget10", f"{bench}:retain_perturbed"
    head = tmp_path / "head"
    common = ["--threads", "1"]
    _run(["unlearn", "--model", str(model), "--forget", str(forget), "--retain", str(retain), "--out", str(head),
          "--epochs", "2", "--hidden-size", "4", "--quiet", "--no-cache", "--device", "cpu", *common])
    cfg = json.loads((head / "t3_config.json").read_text())
    assert cfg["training"]["base_identity"]
    capsys.readouterr()
    _run(["generate", "--model", str(model), "--head", str(head), "--max-new-tokens", "3", "--device", "cpu", *common,
          "Where was Ilse Varga born?"])
    out = capsys.readouterr().out
    assert "Q: Where was Ilse Varga born?\nA:" in out
    _run(["eval", "--model", str(model), "--head", str(head), "--world", str(bench), "--oracle-results", "none",
          "--limit", "2", "--max-new-tokens", "2", "--quiet", "--device", "cpu", "--out", str(tmp_path / "eval"), *common])
    summary = json.loads((tmp_path / "eval" / "TOFU_SUMMARY.json").read_text())
    assert 0 <= summary["forget_Q_A_Prob"] <= 1
    evaluated = json.loads((tmp_path / "eval" / "TOFU_EVAL.json").read_text())
    assert len(evaluated["forget_Q_A_Prob"]["value_by_index"]) == 2  # --limit 2
    _serve_one(model, head)


def _serve_one(model_dir: Path, head: Path) -> None:
    """The app 't3unlearn serve' builds, over this base and head: one completion through the head."""
    from fastapi.testclient import TestClient

    from t3unlearn.lm import load_model, load_tokenizer
    from t3unlearn.serve.app import build

    model, tok = load_model(str(model_dir), device="cpu"), load_tokenizer(str(model_dir))
    app, state = build(model, tok, base_id="base", base_path=str(model_dir), heads={"h": str(head)}, max_batch=4, max_n=1,
                       max_body=1 << 16)
    try:
        with TestClient(app) as client:
            r = client.post("/v1/completions", json={"model": "h", "prompt": "Where was", "max_tokens": 2, "temperature": 0})
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["finish_reason"] in ("length", "stop")
    finally:
        state.engine.close()


# --------------------------------------------------------------------------- the loading options


COMMANDS = ("unlearn", "eval", "generate", "calibrate", "serve", "probe", "features", "baseline", "compare")


def _subparsers():
    import argparse

    from t3unlearn.commands.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices


def test_every_loading_command_has_the_loading_options_from_one_definition(capsys):
    from t3unlearn.loading import LOADING_OPTIONS

    _, commands = _subparsers()
    for name in COMMANDS:
        p = commands[name]
        help_text = p.format_help()
        for flag in ("--dtype", "--device-map", "--trust-remote-code", "--revision", "--attn-implementation"):
            assert flag in help_text, (name, flag)
        actions = {a.dest: a for a in p._actions}
        for opt in LOADING_OPTIONS:  # the same help and choices everywhere: one definition
            assert actions[opt.keyword].help == opt.help and actions[opt.keyword].option_strings == [opt.option], name
    assert "--limit" in commands["eval"].format_help()


def test_no_parser_accepts_abbreviations():
    import argparse

    parser, commands = _subparsers()
    todo, seen = [parser], 0
    while todo:
        p = todo.pop()
        assert p.allow_abbrev is False, p.prog
        seen += 1
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo.extend(a.choices.values())
    assert seen > 20
    with pytest.raises(SystemExit):
        parser.parse_args(["generate", "--model", "m", "--max-new", "3", "q"])  # --max-new-tokens, abbreviated


@pytest.fixture(scope="module")
def llama(small_tokenizer, tmp_path_factory, bench):
    """A tiny Llama, a same-shape twin with other weights, a chat-template copy, and a head trained on the first."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("loading")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config("llama", SMALL, small_tokenizer))
    model.save_pretrained(root / "model")
    small_tokenizer.save_pretrained(root / "model")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    model.save_pretrained(root / "twin")
    small_tokenizer.save_pretrained(root / "twin")
    chat = copy.deepcopy(small_tokenizer)
    chat.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"
    AutoModelForCausalLM.from_pretrained(root / "model").save_pretrained(root / "chat")
    chat.save_pretrained(root / "chat")
    _run(["unlearn", "--model", str(root / "model"), "--forget", f"{bench}:forget10", "--retain", f"{bench}:retain_perturbed",
          "--out", str(root / "head"), "--epochs", "2", "--hidden-size", "4", "--quiet", "--no-cache", "--device", "cpu",
          "--threads", "1"])
    return root


def test_loading_options_reach_from_pretrained(llama, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seen = {}
    real_model, real_tok = AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained

    def spy_model(path, **kw):
        seen["model"] = kw
        return real_model(path, **{k: v for k, v in kw.items() if k != "revision"})

    def spy_tok(path, **kw):
        seen["tokenizer"] = kw
        return real_tok(path)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy_model)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", spy_tok)
    capsys.readouterr()
    _run(["generate", "--model", str(llama / "model"), "--head", str(llama / "head"), "--dtype", "bfloat16",
          "--attn-implementation", "eager", "--revision", "v1", "--trust-remote-code", "--device", "cpu",
          "--max-new-tokens", "2", "--threads", "1", "Where was Ilse Varga born?"])
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "--revision" in ln]
    assert len(notes) == 1 and re.fullmatch(r"note: --revision v1 is for hub ids; \S+/model is a local directory, "
                                            r"loaded as it is\.", notes[0]), notes
    assert seen["model"] == {"dtype": "bfloat16", "attn_implementation": "eager", "revision": "v1", "trust_remote_code": True}
    assert seen["tokenizer"] == {"revision": "v1", "trust_remote_code": True}
    _run(["generate", "--model", str(llama / "model"), "--device", "cpu", "--max-new-tokens", "2", "--threads", "1", "Q?"])
    assert seen["model"] == {"dtype": "auto"}  # nothing given: the checkpoint's own dtype


def test_baseline_passes_the_loading_options_to_from_pretrained(llama, bench, tmp_path, monkeypatch):
    """`t3unlearn baseline` loads the model to fine-tune with the loading options (the tokenizer with the ones it takes)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seen = {"model": [], "tokenizer": []}
    real_model, real_tok = AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained

    def spy_model(path, **kw):
        seen["model"].append(kw)
        return real_model(path, **{k: v for k, v in kw.items() if k != "revision"})

    def spy_tok(path, **kw):
        seen["tokenizer"].append(kw)
        return real_tok(path)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy_model)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", spy_tok)
    _run(["baseline", "graddiff", "--model", str(llama / "model"), "--forget", f"{bench}:forget10", "--retain",
          f"{bench}:retain_perturbed", "--out", str(tmp_path / "gd"), "--epochs", "1", "--batch-size", "8", "--grad-accum",
          "1", "--dtype", "bfloat16", "--attn-implementation", "eager", "--revision", "v1", "--trust-remote-code",
          "--threads", "1", "--quiet"])
    assert seen["model"] == [{"dtype": "bfloat16", "attn_implementation": "eager", "revision": "v1", "trust_remote_code": True}]
    assert seen["tokenizer"] == [{"revision": "v1", "trust_remote_code": True}]
    saved = real_model(tmp_path / "gd")
    assert {p.dtype for p in saved.parameters()} == {torch.bfloat16}  # it was fine-tuned as loaded


def test_head_stays_float32_over_a_bfloat16_base(llama):
    import torch

    from t3unlearn.lm import load_lm

    fp32 = load_lm(str(llama / "model"), head=str(llama / "head"), device="cpu")
    bf16 = load_lm(str(llama / "model"), head=str(llama / "head"), device="cpu", dtype="bfloat16")
    assert {p.dtype for p in bf16.model.base.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in bf16.model.head.parameters()} == {torch.float32}
    ids = torch.tensor([bf16.formatter.prompt_ids("Where was Ilse Varga born?")])
    with torch.no_grad():
        a, b = fp32.model(input_ids=ids).logits, bf16.model(input_ids=ids).logits
    assert a.dtype == b.dtype == torch.float32
    assert torch.allclose(torch.log_softmax(a, -1), torch.log_softmax(b, -1), atol=0.1)
    assert bf16.generate(["Where was Ilse Varga born?"], max_new_tokens=3) is not None


def test_device_map_places_the_model(llama, monkeypatch):
    """--device-map goes to transformers (accelerate places the model) and --device is then not applied on top."""
    import torch
    from transformers import AutoModelForCausalLM

    from t3unlearn.lm import load_lm

    real, seen, moved = AutoModelForCausalLM.from_pretrained, {}, []
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda path, **kw: seen.update(kw) or real(path, **kw))
    real_to = torch.nn.Module.to
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: moved.append(a) or real_to(self, *a, **k))
    lm = load_lm(str(llama / "model"), head=str(llama / "head"), device_map="cpu", device="cuda")
    assert seen["device_map"] == "cpu" and ("cuda",) not in moved
    assert lm.generate(["Where?"], max_new_tokens=2) is not None


def test_force_puts_a_head_on_a_same_shape_base(llama, capsys):
    from t3unlearn.commands.main import main

    argv = ["generate", "--model", str(llama / "twin"), "--head", str(llama / "head"), "--device", "cpu",
            "--max-new-tokens", "2", "--threads", "1", "Where?"]
    assert main(argv) == 2 and "trained on another base" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    # a bfloat16 load of the head's own base is the same base
    assert main(["generate", "--model", str(llama / "model"), "--head", str(llama / "head"), "--dtype", "bfloat16",
                 "--device", "cpu", "--max-new-tokens", "2", "--threads", "1", "Where?"]) == 0


def test_a_plain_prompt_head_on_a_chat_base_gets_plain_prompts(llama):
    from t3unlearn.lm import CausalLM, load_lm

    lm = load_lm(str(llama / "chat"), head=str(llama / "head"), device="cpu")
    assert lm.formatter.use_chat is False  # the head was trained on plain prompts
    base = load_lm(str(llama / "chat"), device="cpu")
    assert isinstance(base, CausalLM) and base.formatter.use_chat is True


def test_an_existing_head_is_replaced_only_with_overwrite(llama, bench, tmp_path, capsys):
    import shutil

    from t3unlearn.commands.main import main

    out = tmp_path / "head"
    shutil.copytree(llama / "head", out)
    before = (out / "t3_config.json").read_text()
    argv = ["unlearn", "--model", str(llama / "model"), "--forget", f"{bench}:holdout10", "--retain",
            f"{bench}:retain_perturbed", "--out", str(out), "--epochs", "1", "--hidden-size", "4", "--quiet",
            "--no-cache", "--device", "cpu", "--threads", "1"]
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert (out / "t3_config.json").read_text() == before
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "t3_config.json").read_text() != before


def test_items_cut_at_max_length_are_reported(llama, tmp_path, capsys):
    from t3unlearn.commands.main import main

    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"question": "Tell me everything.", "answer": "word " * 400}) + "\n")
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"question": "Where?", "answer": "Here."}) + "\n")
    assert main(["unlearn", "--model", str(llama / "model"), "--forget", str(long), "--retain", str(short), "--out",
                 str(tmp_path / "h"), "--epochs", "1", "--hidden-size", "4", "--quiet", "--no-cache", "--device", "cpu",
                 "--max-length", "64", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "note: 1 forget item(s) (e.g. item 0) are longer than --max-length 64 tokens and are cut there" in err
    assert "retain item" not in err


def test_local_paths_and_hub_ids_are_told_apart(tmp_path, monkeypatch):
    from t3unlearn.errors import ModelError
    from t3unlearn.loading import check_model_source, hub_error_message, looks_local

    (tmp_path / "models" / "llama").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not looks_local("meta-llama/Llama-3.2-1B") and not looks_local("gpt2")
    assert looks_local("./llama") and looks_local("~/m") and looks_local("/abs/m") and looks_local("a/b/c")
    assert looks_local("models/lama")  # its first component is a directory here
    with pytest.raises(ModelError, match=r"^no such model directory models/lama; did you mean models/llama\?"):
        check_model_source("models/lama")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    check_model_source("meta-llama/Llama-3.2-1B")  # a hub id: transformers is asked
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # ... unless it cannot be: offline and not in the hub cache
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set so the Hugging Face hub is not asked"):
        check_model_source("meta-llama/Llama-3.2-1B")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    no_net = OSError("We couldn't connect to 'https://huggingface.co' to load the files")
    assert hub_error_message("org/m", no_net).startswith("could not reach the Hugging Face hub to download model org/m")
    missing = OSError("org/m is not a local folder and is not a valid model identifier listed on 'https://huggingface.co/models'")
    assert "neither a local directory nor a model on the Hugging Face hub" in hub_error_message("org/m", missing)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE is set" in hub_error_message("org/m", no_net)


def test_an_attention_kernel_whose_package_is_missing_is_one_line(llama, monkeypatch):
    """transformers raises ImportError for flash_attention_2 without flash-attn (and for a checkpoint's own code
    that needs a package): one ModelError saying what to do, never a traceback."""
    from transformers import AutoModelForCausalLM

    from t3unlearn.errors import ModelError
    from t3unlearn.lm import load_base

    def no_flash(path, **kw):
        raise ImportError("FlashAttention2 has been toggled on, but it cannot be used due to the following error: the "
                          "package for FlashAttention2 doesn't seem to be installed.")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_flash)
    with pytest.raises(ModelError, match=r"^--attn-implementation flash_attention_2 cannot be used here \(FlashAttention2 "
                                         r".*\); install its package, or use sdpa or eager\.$"):
        load_base(str(llama / "model"), device="cpu", attn_implementation="flash_attention_2")
    with pytest.raises(ModelError, match=r"could not load the model .*: FlashAttention2 .*; install the package it names"):
        load_base(str(llama / "model"), device="cpu")
