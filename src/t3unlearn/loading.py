"""Model-loading options, defined once: every command that loads a model adds them from here.

:data:`LOADING_OPTIONS` lists each setting once, with its help text and the ``from_pretrained`` keyword it
becomes (as transformers 5.x names it); :func:`add_loading_options` puts them on a parser and
:func:`loading_kwargs` turns parsed arguments back into keywords for :func:`t3unlearn.lm.load_model`.
:func:`check_model_source` tells a mistyped local path or an offline hub id from a network error before
transformers is asked. Nothing here imports torch or transformers at import time (``--help`` stays fast).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

from t3unlearn.errors import ModelError

DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")


@dataclass(frozen=True)
class LoadingOption:
    """One model-loading setting: its flag, the ``from_pretrained`` keyword it becomes, and its help."""

    keyword: str  # the from_pretrained keyword (and the argparse dest)
    help: str
    choices: tuple[str, ...] | None = None
    flag: bool = False  # a store_true switch
    metavar: str | None = None
    kwargs: dict = field(default_factory=dict)

    @property
    def option(self) -> str:
        return "--" + self.keyword.replace("_", "-")


LOADING_OPTIONS: tuple[LoadingOption, ...] = (
    LoadingOption("dtype", "weights' dtype: auto keeps the checkpoint's (a float32 checkpoint loads in float32), "
                  "bfloat16 / float16 halve the memory; a T3 head always computes in float32 [auto]", choices=DTYPES),
    LoadingOption("device_map", "place (shard) the model with accelerate: auto, balanced, sequential, cpu, cuda:0 ...; "
                  "overrides --device [off: the whole model on --device]", metavar="MAP"),
    LoadingOption("trust_remote_code", "run the modelling code a checkpoint ships (its own Python files); only for "
                  "checkpoints you trust [off]", flag=True),
    LoadingOption("revision", "the hub branch, tag or commit to load (hub ids only) [main]", metavar="REV"),
    LoadingOption("attn_implementation", "attention kernel: eager, sdpa, flash_attention_2 (needs flash-attn), "
                  "flash_attention_3, flex_attention [transformers' default for the model]", choices=ATTN_IMPLEMENTATIONS),
)

# the keywords a tokenizer takes too
TOKENIZER_KEYWORDS = ("revision", "trust_remote_code")


def add_loading_options(parser, title: str = "model loading (passed to transformers' from_pretrained)"):
    """Add every :data:`LOADING_OPTIONS` setting to ``parser`` (in its own argument group); returns the group."""
    group = parser.add_argument_group(title)
    for opt in LOADING_OPTIONS:
        if opt.flag:
            group.add_argument(opt.option, dest=opt.keyword, action="store_true", help=opt.help)
        else:
            group.add_argument(opt.option, dest=opt.keyword, default=None, choices=opt.choices, metavar=opt.metavar,
                               help=opt.help)
    return group


def loading_kwargs(args) -> dict:
    """The model-loading keywords the user gave (defaults left out, so transformers' own apply)."""
    kw = {}
    for opt in LOADING_OPTIONS:
        value = getattr(args, opt.keyword, None)
        if value not in (None, False):
            kw[opt.keyword] = value
    return kw


def tokenizer_kwargs(kwargs: dict) -> dict:
    """The part of the model-loading keywords a tokenizer takes (revision, trust_remote_code)."""
    return {k: v for k, v in kwargs.items() if k in TOKENIZER_KEYWORDS}


# --------------------------------------------------------------------------- where a model comes from


def _near_miss(p: Path) -> str | None:
    """An existing sibling directory whose name is close to ``p``'s (a typo), or None."""
    parent = p.parent if str(p.parent) not in ("", ".") else Path(".")
    try:
        names = [c.name for c in parent.iterdir() if c.is_dir()]
    except OSError:
        return None
    close = difflib.get_close_matches(p.name, names, n=1, cutoff=0.75)
    return str(parent / close[0]) if close else None


def looks_local(path: str) -> bool:
    """Whether ``path`` is meant as a local directory rather than a hub id: it starts with ``.``, ``/`` or
    ``~``, has more than one separator or a backslash, its first component exists here, or it is a near-miss
    of an existing directory."""
    text = str(path)
    if text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1:
        return True
    p = Path(text)
    if "/" in text and Path(text.split("/", 1)[0]).is_dir():
        return True
    return _near_miss(p) is not None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def check_model_source(path: str, what: str = "model", *, revision: str | None = None) -> None:
    """A ModelError for a model path that cannot be what the user meant, before transformers is asked: a
    local-looking path that does not exist ("did you mean ...?"), a directory without config.json, an
    unreadable config.json."""
    import json

    p = Path(str(path)).expanduser()
    bench = str(path).partition(":")[0]
    if not p.exists() and ":" in str(path) and (bench in ("world", "tofu") or bench.startswith("world-")):
        raise ModelError(f"{str(path)!r} names a model of an embedded benchmark; resolve it first with "
                         "t3unlearn.benchmarks.resolve_model (the command line does), or give the model's directory.")
    if p.exists():
        if not p.is_dir():
            raise ModelError(f"{what} {path} is a file; give the model's directory (with config.json and the weights).")
        cfg = p / "config.json"
        if not cfg.is_file():
            return  # the caller says what it needs (an adapter directory, or no model at all)
        try:
            json.loads(cfg.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelError(f"{cfg} is not valid JSON ({str(exc).splitlines()[0]}); the model directory is corrupt, "
                             "copy or save the model again.") from None
        return
    if looks_local(str(path)):
        near = _near_miss(p)
        hint = f"; did you mean {near}?" if near else "; check the path (a hub id has the form ORG/NAME)."
        raise ModelError(f"no such {what} directory {path}{hint}")
    if hub_offline() and not revision and not _in_hub_cache(str(path)):  # say so at once, without transformers' lookups
        raise ModelError(hub_error_message(str(path), OSError("offline"), what))


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the hub cache holds ``repo_id``'s config.json (its main revision)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an id the hub library rejects: let transformers say what is wrong
        return True


def hub_error_message(path: str, exc: BaseException, what: str = "model") -> str:
    """One line for a failure to fetch ``path`` from the hub (offline, no network, no such repository)."""
    text = str(exc)
    if hub_offline():
        return (f"{what} {path} is not a local directory, and HF_HUB_OFFLINE is set so the Hugging Face hub is not asked "
                "(nor is it in the hub cache); give a local model directory, or unset HF_HUB_OFFLINE to download it.")
    if "couldn't connect" in text.lower() or "connection" in text.lower():
        return (f"could not reach the Hugging Face hub to download {what} {path} (no network?) and it is not in the hub cache; "
                "give a local model directory, or connect and rerun.")
    if "not a valid model identifier" in text or "Repository Not Found" in text or "404" in text:
        return (f"{what} {path} is neither a local directory nor a model on the Hugging Face hub (a gated or private one "
                "needs 'hf auth login'); check the name.")
    if "revision" in text.lower():
        return f"{what} {path} has no revision {text.split('revision')[-1].strip()[:60]!r}; check --revision."
    return f"could not load the {what} {path!r}: {text.splitlines()[0] if text else type(exc).__name__}"


def check_device(device: str | None) -> None:
    """A ModelError for a ``--device`` this torch cannot use (cuda on a CPU-only build, a GPU index it lacks)."""
    if not device:
        return
    import torch

    kind = str(device).split(":")[0]
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu, "
                             "or install a CUDA build of torch on a machine with a GPU.")
        index = str(device).partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ModelError(f"--device {device}: there are {torch.cuda.device_count()} CUDA GPU(s) (cuda:0 ...); pick one.")
    elif kind == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ModelError(f"--device {device}: this machine has no Apple GPU (MPS); use --device cpu.")
    elif kind not in ("cpu", "xpu", "hpu", "npu", "meta"):
        raise ModelError(f"--device {device} is not a device; use cpu, cuda, cuda:1, mps ...")


__all__ = ["LOADING_OPTIONS", "LoadingOption", "add_loading_options", "loading_kwargs", "tokenizer_kwargs",
           "check_model_source", "check_device", "hub_error_message", "looks_local"]
