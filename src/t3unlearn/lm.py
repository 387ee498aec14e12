"""The one LM interface every model answers: per-token log-probs of answers, and generation.

Every method in this project produces a ``transformers`` causal LM whose forward returns
next-token logits: the base model, :class:`t3unlearn.T3ForCausalLM` (guided logits), a
fine-tuned baseline, a logit-difference model. :class:`CausalLM` wraps any of them with its
tokenizer, so evaluation and the CLI never special-case a method.

Adapters are recognised by the config file in their directory (see :data:`ADAPTERS`):
``load_lm(path)`` loads a plain model, a T3 head over its base, or any registered wrapper.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from t3unlearn.data import IGNORE_INDEX, QAExample, QAFormatter, batched, collate
from t3unlearn.errors import ModelError

# config file in a saved directory -> "module:Class" with a from_pretrained(path, **kw) loader
HEAD_CONFIG = "t3_config.json"  # a T3 head's directory
ADAPTERS = {
    HEAD_CONFIG: "t3unlearn.t3.model:T3ForCausalLM",
    "uld_config.json": "t3unlearn.baselines.uld:ULDForCausalLM",
}


@dataclass
class TokenScores:
    """Teacher-forced statistics of one item's labelled tokens: the answer's tokens, EOS last.

    logprob: log p(label_t | prefix); correct: argmax == label; mu / var: mean and variance of
    log p under the model's own next-token distribution (for Min-K%++); labels: the token ids.
    """

    logprob: np.ndarray
    correct: np.ndarray
    mu: np.ndarray
    var: np.ndarray
    labels: np.ndarray

    @property
    def avg_loss(self) -> float:
        return float(-self.logprob.mean())

    def without_eos(self) -> "TokenScores":
        """The answer tokens only (the final EOS dropped), for min-k, min-k++, ES and EM."""
        return TokenScores(self.logprob[:-1], self.correct[:-1], self.mu[:-1], self.var[:-1], self.labels[:-1])


# --------------------------------------------------------------------------- transformers' cache keyword


@functools.cache
def cache_kwarg() -> str:
    """The name transformers gives the KV cache in ``forward``, ``generate``'s model kwargs and model
    outputs: ``cache`` in recent 5.x releases, ``past_key_values`` before (kept as a deprecated alias until
    5.40). Wrappers that pass a cache on (T3, ULD, the server) use this name, so they neither warn today nor
    break when the alias goes."""
    import inspect

    from transformers import GenerationMixin

    params = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out):
    """The KV cache a model output carries (under either name)."""
    got = out.get(cache_kwarg()) if hasattr(out, "get") else None
    return got if got is not None else getattr(out, "past_key_values", None)


# --------------------------------------------------------------------------- answer log-probabilities


def answer_targets(labels):
    """Shift and mask: ``(mask (B, T-1), target (n,))`` where position ``t`` predicts ``labels[:, t + 1]``
    and ``mask`` marks the answer positions (labels other than ``-100``); ``target`` are their labels in
    row-major order."""
    shifted = labels[:, 1:]
    mask = shifted != IGNORE_INDEX
    return mask, shifted[mask]


def answer_logprobs(logits, labels):
    """Next-token log-probabilities at the answer positions only: ``(logp (n, V) float32, target (n,),
    mask (B, T-1))``. Prompt and padding positions never reach the softmax."""
    import torch

    mask, target = answer_targets(labels)
    logp = torch.log_softmax(logits[:, :-1][mask].float(), dim=-1)
    return logp, target, mask


def answer_token_logprobs(logits, labels):
    """``log p(label_t | prefix)`` of every answer token: ``(token_logprobs (B, T-1), mask (B, T-1))``,
    zeros off the answer; differentiable. Sum over the last axis for an item's ``log pi(y | x)``."""
    logp, target, mask = answer_logprobs(logits, labels)
    picked = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    out = picked.new_zeros(mask.shape)
    out[mask] = picked
    return out, mask


class CausalLM:
    """A causal LM and its tokenizer behind one interface (see the module doc)."""

    def __init__(self, model, tokenizer, *, name: str | None = None, template: str = "auto", max_length: int = 512):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self.formatter = QAFormatter(tokenizer, max_length=max_length, template=template)

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def stop_ids(self) -> list[int]:
        """Every token that ends an answer: the tokenizer's EOS and all of the model's generation-config
        EOS ids (Llama-3.x chat models have several)."""
        ids = [self.formatter.eos_id]
        gen = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for i in gen if isinstance(gen, (list, tuple)) else [gen]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
        return ids

    # ------------------------------------------------------------------ scoring
    def encode(self, questions: Sequence[str], answers: Sequence[str]) -> list[QAExample]:
        return self.formatter.encode_many(questions, answers)

    def token_scores(self, examples: Sequence[QAExample], *, batch_size: int = 16) -> list[TokenScores]:
        """One forward pass per batch; statistics at each labelled position of each example."""
        import torch

        out: list[TokenScores] = []
        # Sort by length so batches pad little; restore the order at the end.
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
        results: dict[int, TokenScores] = {}
        with torch.inference_mode():
            for idx in batched(order, batch_size):
                batch = collate([examples[i] for i in idx], self.formatter.pad_id)
                batch = {k: v.to(self.device) for k, v in batch.items()}
                logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                logp, target, valid = answer_logprobs(logits, batch["labels"])  # (n_labelled, V)
                tok_lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
                correct = logp.argmax(-1) == target
                p = logp.exp()
                mu = (p * logp).sum(-1)
                var = (p * logp.square()).sum(-1) - mu.square()
                stats = [t.cpu().numpy() for t in (tok_lp, correct, mu, var, target)]
                bounds = np.cumsum([0] + valid.sum(-1).tolist())
                for row, i in enumerate(idx):
                    a, b = bounds[row], bounds[row + 1]
                    results[i] = TokenScores(*(x[a:b] for x in stats))
        out = [results[i] for i in range(len(examples))]
        return out

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        questions: Sequence[str],
        *,
        max_new_tokens: int = 200,
        batch_size: int = 16,
        progress=None,
        stage_tokens: int | None = None,
        **generate_kwargs,
    ) -> list[str]:
        """Answer each question (greedy unless ``generate_kwargs`` say otherwise).

        Left-padded batches; only new tokens are decoded, special tokens skipped, cut at EOS, stripped.

        ``stage_tokens`` (greedy only): generate at most that many tokens per batch first, then
        continue only the rows without an EOS, batched together, up to ``max_new_tokens``. The
        answers are the same (greedy continuation of the same prefix); one long answer no longer
        holds its whole batch for ``max_new_tokens`` steps.
        """
        prompts = [self.formatter.prompt_ids(q) for q in questions]
        return self.complete(prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress,
                             stage_tokens=stage_tokens, **generate_kwargs)

    def complete(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int = 200,
        batch_size: int = 16,
        progress=None,
        stage_tokens: int | None = None,
        **generate_kwargs,
    ) -> list[str]:
        """Continue each prompt given as token ids (a formatted question, perhaps with the start of an
        answer); the new tokens decoded as :meth:`generate` does."""
        generate_kwargs.setdefault("do_sample", False)
        prompts = [list(p) for p in prompts]
        if stage_tokens is not None and (stage_tokens < 1 or generate_kwargs.get("do_sample")):
            stage_tokens = None
        first = min(stage_tokens or max_new_tokens, max_new_tokens)
        new = self._generate_ids(prompts, first, batch_size, progress, generate_kwargs)
        stops = set(self.stop_ids)

        def cut(toks: list[int]) -> list[int]:
            return next((toks[:k] for k, t in enumerate(toks) if t in stops), toks)

        if first < max_new_tokens:
            todo = [i for i, toks in enumerate(new) if len(cut(toks)) == len(toks) and len(toks) >= first]
            if todo:
                more = self._generate_ids([prompts[i] + new[i] for i in todo], max_new_tokens - first, batch_size, None, generate_kwargs)
                for i, toks in zip(todo, more):
                    new[i] = new[i] + toks
        return [self.tokenizer.decode(cut(toks), skip_special_tokens=True).strip() for toks in new]

    def _generate_ids(self, prompts: list[list[int]], max_new_tokens: int, batch_size: int, progress, generate_kwargs) -> list[list[int]]:
        """New token ids for each prompt (length-sorted, left-padded batches)."""
        import torch

        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[list[int]] = [[] for _ in prompts]
        for idx in batched(order, batch_size):
            exs = [QAExample(prompts[i], prompts[i], len(prompts[i])) for i in idx]
            batch = collate(exs, self.formatter.pad_id, padding_side="left")
            ids = batch["input_ids"].to(self.device)
            with torch.inference_mode():
                gen = self.model.generate(
                    input_ids=ids,
                    attention_mask=batch["attention_mask"].to(self.device),
                    max_new_tokens=max_new_tokens,
                    pad_token_id=self.formatter.pad_id,
                    eos_token_id=self.stop_ids,
                    **generate_kwargs,
                )
            new = gen[:, ids.shape[1] :].tolist()
            for row, i in enumerate(idx):
                out[i] = new[row]
            if progress is not None:
                progress.update(len(idx))
        return out


def _adapter(config_name: str):
    """The class :data:`ADAPTERS` registers for ``config_name`` (imported by name: the adapters sit above this module)."""
    module, _, cls = ADAPTERS[config_name].partition(":")
    return getattr(importlib.import_module(module), cls)


def _adapter_class(path: Path):
    for filename in ADAPTERS:
        if (path / filename).is_file():
            return _adapter(filename)
    return None


# keywords that go to transformers when a model is loaded by name (dtype, device placement, attention
# kernel, revision ...); a wrapper's own settings (a T3 head's temperature, ...) are its own business
MODEL_LOADING_KWARGS = frozenset({
    "dtype", "torch_dtype", "device_map", "attn_implementation", "revision", "trust_remote_code", "low_cpu_mem_usage",
    "quantization_config", "cache_dir", "local_files_only", "token", "max_memory", "offload_folder", "subfolder",
})


def split_loading_kwargs(kwargs: dict, what: str, *, others: Sequence[str] = ()) -> dict:
    """Check that every keyword is a model-loading one (or one of ``others``); an unknown one is a ModelError."""
    bad = sorted(set(kwargs) - MODEL_LOADING_KWARGS - set(others))
    if bad:
        known = sorted(MODEL_LOADING_KWARGS | set(others))
        raise ModelError(f"{what} got unknown keyword(s) {', '.join(bad)}; known: {', '.join(known)}.")
    return dict(kwargs)


def load_base(path: str, *, device: str | None = None, **loading_kwargs):
    """``AutoModelForCausalLM.from_pretrained(path, **loading_kwargs)`` in eval mode, on ``device`` (default: a
    GPU when there is one) unless a ``device_map`` places it. A missing, mistyped, unreadable or non-causal model,
    a hub id that cannot be fetched or a device this torch lacks is a ModelError (one line)."""
    from transformers import AutoModelForCausalLM

    from t3unlearn.io import default_device
    from t3unlearn.loading import check_device, check_model_source, hub_error_message, looks_local

    loading_kwargs = split_loading_kwargs(loading_kwargs, "loading a model")
    loading_kwargs.setdefault("dtype", loading_kwargs.pop("torch_dtype", "auto"))
    if "device_map" not in loading_kwargs:
        check_device(device)
    check_model_source(path, revision=loading_kwargs.get("revision"))
    p = Path(str(path)).expanduser()
    if loading_kwargs.get("revision") and p.is_dir():  # transformers reads a local directory as it is
        import sys

        print(f"note: --revision {loading_kwargs['revision']} is for hub ids; {path} is a local directory, loaded as it "
              "is.", file=sys.stderr)
    if p.exists() and not (p / "config.json").is_file():
        raise ModelError(f"{p} holds no config.json, t3_config.json or other model config; is it a model directory?")
    from safetensors import SafetensorError

    try:
        model = AutoModelForCausalLM.from_pretrained(str(p) if p.exists() else str(path), **loading_kwargs)
    except SafetensorError as exc:
        raise ModelError(f"the weights of {path} are corrupt or incomplete ({str(exc).splitlines()[0]}); "
                         "copy or save the model again.") from None
    except ValueError as exc:
        raise ModelError(_value_error_message(path, exc, loading_kwargs)) from None
    except ImportError as exc:  # a kernel or a checkpoint's own code that needs a package not installed here
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        if loading_kwargs.get("attn_implementation") and "attention" in str(exc).lower():
            raise ModelError(f"--attn-implementation {loading_kwargs['attn_implementation']} cannot be used here ({first}); "
                             "install its package, or use sdpa or eager.") from None
        raise ModelError(f"could not load the model {path!r}: {first}; install the package it names.") from None
    except OSError as exc:
        if p.exists() or looks_local(str(path)):
            raise ModelError(f"could not load the model {path!r}: {exc}".split("\n")[0]) from None
        raise ModelError(hub_error_message(str(path), exc)) from None
    if "device_map" not in loading_kwargs:
        model = model.to(device or default_device())
    return model.eval()


def _value_error_message(path, exc: ValueError, loading_kwargs: dict) -> str:
    """One line for transformers' ValueErrors when loading: not a causal LM, a bad attention kernel, remote code."""
    text = str(exc)
    if "Unrecognized configuration class" in text or "Unrecognized model" in text:
        import json

        kind = "?"
        try:
            kind = json.loads((Path(str(path)).expanduser() / "config.json").read_text()).get("model_type", "?")
        except (OSError, ValueError):
            pass
        return (f"{path} is a {kind} model, which transformers cannot load as a causal (decoder-only) LM; T3 needs one "
                "AutoModelForCausalLM loads (Llama, Qwen2, Mistral, GPT-2, ...), not an encoder-decoder or encoder.")
    if "attn_implementation" in text:
        return (f"--attn-implementation {loading_kwargs.get('attn_implementation')} is not available for {path} here "
                f"({text.splitlines()[0][:160]}); use sdpa or eager.")
    if "trust_remote_code" in text:
        return f"{path} ships its own modelling code; add --trust-remote-code (trust_remote_code=True) if you trust it."
    if "device_map" in text or "accelerate" in text:
        return f"--device-map {loading_kwargs.get('device_map')} is not usable: {text.splitlines()[0][:200]}"
    return f"could not load the model {path!r}: {text.splitlines()[0][:300]}"


def load_model(path: str, *, device: str | None = None, head: str | None = None, **kwargs):
    """Load a causal LM from a directory or a hub id; ``head`` attaches a T3 head to it.

    A directory holding an adapter config (T3 head, ULD assistant, ...) loads through that adapter's
    ``from_pretrained``; anything else through ``AutoModelForCausalLM``. ``kwargs``: model-loading
    keywords (``dtype``, ``device_map``, ``attn_implementation``, ...) and the adapter's own settings
    (a T3 head's ``temperature``, ``scale``, ...); an unknown keyword is an error, never dropped.
    """
    p = Path(path)
    force = kwargs.pop("force", False)
    if head is not None:  # a T3 head over this base: the adapter that t3_config.json names
        return _adapter(HEAD_CONFIG).from_base(str(path), head, device=device, force=force, **kwargs)
    adapter = _adapter_class(p) if p.is_dir() else None
    if adapter is not None:
        return adapter.from_pretrained(str(p), device=device, **({"force": True} if force else {}), **kwargs)
    return load_base(str(path), device=device, **kwargs)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "vocab.txt", "tokenizer.tiktoken")


def load_tokenizer(path: str, **kwargs):
    """The tokenizer of a model directory, of a T3 head's base, or of a hub id (``kwargs``: ``revision``,
    ``trust_remote_code``). A directory without tokenizer files, a missing path, a tokenizer that needs
    sentencepiece, is a ModelError (one line)."""
    from transformers import AutoTokenizer

    from t3unlearn.loading import check_model_source, hub_error_message, looks_local

    p = Path(path).expanduser()
    if p.is_dir() and not (p / "tokenizer_config.json").is_file():
        adapter = _adapter_class(p)
        if adapter is not None and hasattr(adapter, "base_model_path"):
            base = adapter.base_model_path(str(p), **({"must_exist": True} if adapter is _adapter(HEAD_CONFIG) else {}))
            return load_tokenizer(base, **kwargs)
    check_model_source(path, revision=kwargs.get("revision"))
    if p.is_dir() and not any((p / name).is_file() for name in TOKENIZER_FILES):
        if not (p / "config.json").is_file():
            raise ModelError(f"{p} holds no config.json, t3_config.json or other model config; is it a model directory?")
        raise ModelError(f"{path} has no tokenizer files (tokenizer.json, tokenizer_config.json, tokenizer.model ...); copy "
                         "them from the checkpoint the model came from (or save the tokenizer there with save_pretrained).")
    try:
        return AutoTokenizer.from_pretrained(str(p) if p.exists() else str(path), **kwargs)
    except (ValueError, ImportError) as exc:
        text = str(exc)
        if "sentencepiece" in text or "tiktoken" in text or "protobuf" in text:
            raise ModelError(f"the tokenizer of {path} needs sentencepiece (and protobuf) to load; "
                             "pip install sentencepiece protobuf.") from None
        raise ModelError(f"could not load a tokenizer for {path!r}: {text.splitlines()[0][:300]}") from None
    except OSError as exc:
        if p.exists() or looks_local(str(path)):
            raise ModelError(f"could not load a tokenizer for {path!r}: {exc}".split("\n")[0]) from None
        raise ModelError(hub_error_message(str(path), exc)) from None


def load_lm(path: str, *, head: str | None = None, device: str | None = None, name: str | None = None, **kwargs) -> CausalLM:
    """A :class:`CausalLM` for a model path (plus an optional T3 head directory); ``kwargs`` as :func:`load_model`.

    The tokenizer is loaded first (a model directory without one fails before the weights are read). A T3 head's
    prompts are formatted as in its training (its recorded template): a head trained on chat-formatted prompts
    over a base without a chat template is refused, a plain-prompt head over a chat base is given plain prompts."""
    from t3unlearn.loading import tokenizer_kwargs

    tokenizer = load_tokenizer(path, **tokenizer_kwargs(kwargs))
    model = load_model(path, device=device, head=head, **kwargs)
    template = head_template(model, tokenizer, head or path)
    label = name or (f"{Path(path).name}+{Path(head).name}" if head else Path(str(path)).name)
    return CausalLM(model, tokenizer, name=label, template=template)


def head_template(model, tokenizer, where) -> str:
    """The prompt template a guided model needs: its head's recorded one ("chat" / "plain"), else "auto"."""
    training = getattr(getattr(model, "config", None), "training", None) or {}
    recorded = training.get("template") if isinstance(training, dict) else None
    if recorded == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"the head in {where} was trained on chat-formatted prompts, but this base's tokenizer has no chat "
                         "template (a base model, not its instruct/chat version?); use the base the head was trained on.")
    return recorded if recorded in ("chat", "plain") else "auto"
