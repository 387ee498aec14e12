"""Shared fixtures. Everything here is offline and CPU-sized.

- ``small_tokenizer`` / ``random_lm``: a byte-level BPE tokenizer and an untrained
  Llama-architecture model of a few thousand parameters, for unit tests of code that only
  needs *a* causal LM.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _offline_and_isolated(tmp_path_factory):
    """No test reaches the network or writes into the user's cache: the Hugging Face libraries are
    told to stay offline, and ``T3UNLEARN_HOME`` points at a session temp dir (tests that need a
    fresh one still set their own)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_DATASETS_OFFLINE", "1")
    mp.setenv("T3UNLEARN_HOME", str(tmp_path_factory.mktemp("t3unlearn-home")))
    yield
    mp.undo()

@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny tensors and models: faster, and far faster on a busy machine
    (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def module_home(tmp_path_factory):
    """One ``T3UNLEARN_HOME`` for a test module, so its cached units (benchmarks, models) are shared."""
    import os

    path = tmp_path_factory.mktemp("module-home")
    old = os.environ.get("T3UNLEARN_HOME")
    os.environ["T3UNLEARN_HOME"] = str(path)
    yield path
    if old is None:
        os.environ.pop("T3UNLEARN_HOME", None)
    else:
        os.environ["T3UNLEARN_HOME"] = old


_CORPUS = [
    "Question: Where was Ilse Varga born?\nAnswer: Ilse Varga was born in Lisbon on 3 May 1961.",
    "Question: What genre does Tomas Reed write?\nAnswer: Tomas Reed writes science fiction.",
    "Question: What is the capital of France?\nAnswer: The capital of France is Paris.",
    "I don't know. That is not something I can answer.",
]


@pytest.fixture(scope="session")
def small_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 20, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


@pytest.fixture(scope="session")
def random_lm(small_tokenizer):
    """(model, tokenizer): an untrained 2-layer Llama, deterministic for seed 0."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(small_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=small_tokenizer.bos_token_id,
        eos_token_id=small_tokenizer.eos_token_id,
        pad_token_id=small_tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(cfg).eval(), small_tokenizer


# --------------------------------------------------------------------------- the offline world
@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A built tiny-preset world directory (20 authors x 10 QA), seed 0."""
    from t3unlearn.world import build_world

    return build_world(tmp_path_factory.mktemp("tiny_world") / "world", "tiny")


@pytest.fixture(scope="session")
def tiny_models(tiny_world, tmp_path_factory):
    """{"pretrained", "full", "retain90"} -> model directory, trained on ``tiny_world`` (seconds).

    Trained with ``T3UNLEARN_HOME`` pointed at a session temp dir (restored afterwards); each
    directory loads with ``AutoModelForCausalLM`` / ``AutoTokenizer`` ``.from_pretrained``.
    """
    import os

    from t3unlearn.world import ensure_models

    home = tmp_path_factory.mktemp("t3home")
    old = os.environ.get("T3UNLEARN_HOME")
    os.environ["T3UNLEARN_HOME"] = str(home)
    try:
        return ensure_models(tiny_world, ("pretrained", "full", "retain90"))
    finally:
        if old is None:
            os.environ.pop("T3UNLEARN_HOME", None)
        else:
            os.environ["T3UNLEARN_HOME"] = old


@pytest.fixture(scope="session")
def benchmark_script():
    """Load a script of ``benchmarks/`` by name as a module (they are scripts, not a package)."""
    import importlib.util
    from pathlib import Path

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load
