"""Tiny models for the offline benchmarks, made the way TOFU's models are made.

1. a byte-level BPE tokenizer trained on the base's pretraining text (``pretrain``), as a real model's
   tokenizer comes from its pretraining: it treats every fictitious author (forget, retain, holdout) alike;
2. a small ``LlamaForCausalLM`` *pretrained* on the "real" (classic) authors and world facts;
3. from that same base, fine-tunes on ``full`` (the target model) and on ``retainXX`` (the
   oracle models that never saw the forget authors).

Loss is on answer tokens only, formatted by :class:`t3unlearn.data.QAFormatter` so training and
evaluation see exactly the same token sequences. Everything is cached under
``cache_home()/models/<preset>-<fingerprint>/<name>`` where the fingerprint covers the training
files (:data:`TRAIN_FILES`), every training setting and :data:`TRAIN_VERSION`, so a change to an
evaluation-only file (perturbed answers, holdout authors) retrains nothing.

The recipe reads a *training directory*: ``pretrain.jsonl``, ``full.jsonl`` and
``retainXX.jsonl`` plus a ``world.json`` naming its ``preset`` (a built world is one; so is the
directory :mod:`t3unlearn.tofu` derives from TOFU's own data).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from t3unlearn.errors import T3Error
from t3unlearn.settings import reject_unknown

TRAIN_VERSION = "3"  # 2: tokenizer on the training files only; transformers' cosine schedule
#                      3: tokenizer on the pretraining text only
MODEL_NAMES = ("pretrained", "full", "retain90", "retain95", "retain99")
BASE_FILES = ("pretrain",)  # the tokenizer's corpus and the base model's data
TRAIN_FILES = (*BASE_FILES, "full", "retain90", "retain95", "retain99")
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]


@dataclass(frozen=True)
class TrainSettings:
    """Every setting that shapes a trained model (all of them enter the cache fingerprint)."""

    vocab_size: int = 3072
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 4
    ffn: int = 384
    batch_size: int = 32
    lr: float = 3e-3
    min_lr_frac: float = 0.05
    warmup_frac: float = 0.05
    weight_decay: float = 0.0
    pretrain_epochs: int = 15
    finetune_epochs: int = 15
    replay: float = 0.2  # share of the pretraining items mixed into each fine-tuning epoch
    max_length: int = 128
    threads: int = 0  # torch threads while training (restored after); 0 = leave torch's default
    seed: int = 0


TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # one thread: on two cores the second gains little for these small matrices, and on a
    # machine shared with other jobs two threads were 6-8x slower (docs/world.md)
    "default": dict(threads=1),
    "tiny": dict(vocab_size=1024, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, ffn=192, batch_size=16,
                 lr=5e-3, pretrain_epochs=10, finetune_epochs=20, threads=1),
    # TOFU's own text: free-form answers of ~38 tokens (4096-token BPE) instead of the world's ~11, so a
    # larger vocabulary and TOFU's 512-token items; the base pretrains on ~3,400 items (t3unlearn.tofu),
    # so less replay keeps the fine-tunes' cost near their own data's (docs/world.md, "Offline TOFU")
    "tofu": dict(vocab_size=4096, max_length=512, pretrain_epochs=8, finetune_epochs=20, replay=0.05, threads=1),
}


def train_settings(world_dir: str | Path, **overrides) -> TrainSettings:
    from t3unlearn.world.generate import read_world_meta

    preset = read_world_meta(world_dir).get("preset") or "default"
    values = dict(TRAIN_PRESETS.get(preset, TRAIN_PRESETS["default"]))
    for k, v in overrides.items():
        if v is None:
            continue
        if k == "epochs":
            k = "finetune_epochs"
        reject_unknown([k], TrainSettings.__dataclass_fields__, what="training setting", error=T3Error)
        values[k] = v
    return TrainSettings(**values)


FINETUNE_ONLY = ("finetune_epochs", "replay")
# runs are bitwise reproducible per thread count, but the cache key ignores it (recorded as 0)
NOT_FINGERPRINTED = {"threads": 0}


def _training_files_fingerprint(world_dir: Path, names) -> dict[str, str]:
    from t3unlearn.io import file_fingerprint

    out = {}
    for name in names:
        path = world_dir / f"{name}.jsonl"
        out[name] = file_fingerprint(path) if path.is_file() else None
    return out


def models_root(world_dir: str | Path, settings: TrainSettings, *, base: bool = False) -> Path:
    """Cache directory of the fine-tuned models (``base=True``: of the tokenizer and pretrained base,
    whose fingerprint leaves out the fine-tuning-only settings and files so fine-tune variants share a
    base). Only the training files enter the fingerprint, never the evaluation files."""
    from t3unlearn.io import cache_home, fingerprint
    from t3unlearn.world.generate import read_world_meta

    world_dir = Path(world_dir)
    meta = read_world_meta(world_dir)
    values = {**asdict(settings), **NOT_FINGERPRINTED}
    files = BASE_FILES if base else TRAIN_FILES
    if base:
        values = {k: v for k, v in values.items() if k not in FINETUNE_ONLY}
    fp = fingerprint("t3-world-models", TRAIN_VERSION, _training_files_fingerprint(world_dir, files), values)
    return cache_home() / "models" / f"{meta.get('preset') or 'custom'}-{'base-' if base else ''}{fp}"


def model_path(world_dir: str | Path, settings: TrainSettings, name: str) -> Path:
    return models_root(world_dir, settings, base=name == "pretrained") / name


# ----------------------------------------------------------------------------- data
def _read(world_dir: Path, config: str) -> list[dict]:
    path = world_dir / f"{config}.jsonl"
    if not path.is_file():
        raise T3Error(f"{world_dir} has no {config}.jsonl; rebuild it with 't3unlearn world build'.")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _corpus(world_dir: Path) -> list[str]:
    """The tokenizer's training text: the base's pretraining items, as the model sees them. A real model's
    tokenizer comes from its pretraining corpus and has never seen the fictitious authors, so the names of
    forget, retain and holdout authors are split into pieces alike; a tokenizer that had learned the
    fine-tuned authors' names would make never-seen authors look unfamiliar for that reason alone (the
    retain model told forget from holdout authors with a membership AUC of 0.93 that way)."""
    return [f"Question: {r['question']}\nAnswer: {r['answer']}" for name in BASE_FILES for r in _read(world_dir, name)]


def train_tokenizer(world_dir: str | Path, vocab_size: int):
    """A byte-level BPE ``PreTrainedTokenizerFast`` (BOS added, EOS, PAD) trained on the training text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(Path(world_dir)), trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=512)


def _examples(tokenizer, items: Sequence[dict], max_length: int):
    from t3unlearn.data import QAFormatter

    fmt = QAFormatter(tokenizer, max_length=max_length, template="plain")
    return fmt.encode_many([r["question"] for r in items], [r["answer"] for r in items])


def _batches(examples, batch_size: int, rng: random.Random):
    """Length-bucketed batches (little padding) in a seeded random order."""
    keys = [(len(e.input_ids), rng.random(), i) for i, e in enumerate(examples)]
    order = [i for _, _, i in sorted(keys)]
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def _collate(examples, idx, pad_id):
    import torch

    from t3unlearn.data import IGNORE_INDEX

    width = max(len(examples[i].input_ids) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    labels = torch.full((len(idx), width), IGNORE_INDEX, dtype=torch.long)
    for r, i in enumerate(idx):
        e = examples[i]
        ids[r, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[r, : len(e.labels)] = torch.tensor(e.labels)
    return ids, labels


def answer_loss(model, ids, labels):
    """Mean cross-entropy over answer tokens; logits only where labels are set (right padding, causal)."""
    import torch.nn.functional as F

    from t3unlearn.lm import answer_targets

    hidden = model.model(input_ids=ids).last_hidden_state[:, :-1]
    mask, target = answer_targets(labels)
    # the LM head runs on the answer positions only; cross_entropy is log_softmax + gather, fused
    logits = model.lm_head(hidden[mask])
    return F.cross_entropy(logits.float(), target)


# ----------------------------------------------------------------------------- model
def new_model(tokenizer, s: TrainSettings):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=s.d_model,
        intermediate_size=s.ffn,
        num_hidden_layers=s.n_layers,
        num_attention_heads=s.n_heads,
        num_key_value_heads=s.n_kv_heads,
        max_position_embeddings=max(256, s.max_length),
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attention_dropout=0.0,
    )
    torch.manual_seed(s.seed)
    return LlamaForCausalLM(cfg)


def train_loop(model, examples, s: TrainSettings, *, epochs: int, seed: int, desc: str, progress: bool = True,
               extra=None, on_epoch=None) -> dict[str, Any]:
    """AdamW with linear warm-up and cosine decay to ``min_lr_frac``; answer-token loss. Returns a log."""
    import torch

    from t3unlearn.progress import progress as progress_bar

    pad_id = model.config.pad_token_id
    rng = random.Random(f"t3-train-{seed}-{desc}")
    extra = extra or []
    n_extra = int(round(s.replay * len(extra)))
    plan = []
    for _ in range(epochs):
        pool = list(examples) + (rng.sample(extra, n_extra) if n_extra else [])
        plan.append((pool, _batches(pool, s.batch_size, rng)))
    total = sum(len(b) for _, b in plan)
    warm = max(1, int(s.warmup_frac * total))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    keep = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay}, {"params": keep, "weight_decay": 0.0}],
                            lr=s.lr, betas=(0.9, 0.98), eps=1e-8)

    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    sched = get_cosine_with_min_lr_schedule_with_warmup(opt, warm, total, min_lr_rate=s.min_lr_frac)
    model.train()
    log: dict[str, Any] = {"epochs": epochs, "steps": total, "epoch_loss": [], "epoch_seconds": []}
    bar = progress_bar(total=total, desc=f"training {desc}", unit="step", enabled=progress)
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch, (pool, batches) in enumerate(plan):
        t0, tot, n = time.perf_counter(), 0.0, 0
        for idx in batches:
            ids, labels = _collate(pool, idx, pad_id)
            loss = answer_loss(model, ids, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            n += len(idx)
            bar.update(1)
        log["epoch_loss"].append(round(tot / max(1, n), 5))
        log["epoch_seconds"].append(round(time.perf_counter() - t0, 3))
        bar.set_postfix(epoch=epoch + 1, loss=f"{tot / max(1, n):.3f}")
        if on_epoch is not None:
            model.eval()
            on_epoch(epoch + 1, model)
            model.train()
    bar.close()
    model.eval()
    log["seconds"] = round(time.perf_counter() - start, 2)
    # CPU seconds of this process: close to the wall time on idle cores with one thread
    log["cpu_seconds"] = round(time.process_time() - cpu_start, 2)
    log["threads"] = torch.get_num_threads()
    return log


# ----------------------------------------------------------------------------- saving / caching
def _save(model, tokenizer, out: Path, info: dict[str, Any]) -> Path:
    from t3unlearn.io import atomic_dir

    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "train_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def _load(path: Path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(str(path)).eval(), AutoTokenizer.from_pretrained(str(path))


def _done(path: Path) -> bool:
    return (path / "model.safetensors").is_file() and (path / "train_info.json").is_file()


def ensure_models(world_dir, names: Sequence[str] = ("full", "retain90"), *, log=None, progress: bool = True,
                  jobs: int | str = "auto", on_ready=None, shipped: bool = True, **overrides) -> dict[str, Path]:
    """Model directories for ``names``, training only the missing ones (see the module doc).

    ``overrides`` are :class:`TrainSettings` fields (``seed``, ``epochs`` = fine-tuning epochs, ...).
    ``log`` (e.g. ``print``) gets a line per training step; ``progress`` shows a bar per model (plain
    lines in logs). Several processes asking for the same models at once train them once: a file
    lock per cache directory serialises them and the others reuse the result.

    ``jobs``: the fine-tunes (``full``, ``retainXX``) all start from the pretrained base and need nothing
    from each other; with ``jobs`` > 1 (``auto``: one per core) and more than one to train, each trains in
    a worker process of its own on the recipe's thread count (:mod:`t3unlearn.workers`), which gives the
    same bits as training them one after the other. Only a recipe with a fixed thread count runs so.
    ``on_ready(name, path)``, if given, is called for each of ``names`` as soon as that model is ready (the
    cached ones first), e.g. to start evaluating it while another still trains.
    ``shipped``: a missing model that ships with the package for exactly this data and these settings (the default
    world's, seed 0: :mod:`t3unlearn.world.packaged`) is copied into the cache instead of trained.
    """
    from filelock import FileLock

    from t3unlearn.io import torch_threads
    from t3unlearn.workers import choose_jobs

    world_dir = Path(world_dir)
    names = list(dict.fromkeys(names))
    bad = [n for n in names if n not in MODEL_NAMES]
    if bad:
        raise T3Error(f"unknown model name(s) {', '.join(bad)}; choose from {', '.join(MODEL_NAMES)}.")
    s = train_settings(world_dir, **overrides)
    choose_jobs(jobs)  # a bad --jobs is an error whatever is cached
    paths = {n: model_path(world_dir, s, n) for n in names}
    if shipped:
        from t3unlearn.world.packaged import unpack

        for p in paths.values():
            if not _done(p):
                unpack(p, log)
    if all(_done(p) for p in paths.values()):
        for n, p in paths.items():
            if on_ready is not None:
                on_ready(n, p)
        return paths
    root = models_root(world_dir, s)
    root.mkdir(parents=True, exist_ok=True)
    # the training recipe's thread count (results are bitwise reproducible per count), restored after
    with FileLock(str(root) + ".lock"), torch_threads(s.threads or 0):
        return _ensure(world_dir, names, s, log or (lambda *_: None), progress, jobs, on_ready or (lambda *_: None))


def _ensure(world_dir: Path, names: list[str], s: TrainSettings, log, progress: bool, jobs: int | str = 1,
            on_ready=lambda *_: None) -> dict[str, Path]:
    from t3unlearn.io import save_json

    root = models_root(world_dir, s)
    base_root = models_root(world_dir, s, base=True)
    paths = {n: model_path(world_dir, s, n) for n in names}
    if all(_done(p) for p in paths.values()):
        for n in names:
            on_ready(n, paths[n])
        return paths
    from filelock import FileLock

    todo = [n for n in names if n != "pretrained" and not _done(paths[n])]
    workers = _fine_tune_workers(jobs, s, len(todo))
    with _pool(workers) as pool:  # the workers start (imports) while the base pretrains
        base_root.mkdir(parents=True, exist_ok=True)
        # the tokenizer and the pretrained base are shared by every fine-tune variant (other roots): their own lock
        with FileLock(str(base_root) + ".lock"):
            _ensure_base(world_dir, s, base_root, log, progress)
        save_json(root / "settings.json", {"train_version": TRAIN_VERSION, "world": str(world_dir), **asdict(s)})
        for n in names:
            if n not in todo:
                on_ready(n, paths[n])
        if pool is not None:
            _fine_tune_in_workers(pool, world_dir, todo, s, log, lambda n: on_ready(n, paths[n]))
            return paths
    for name in todo:
        _fine_tune(world_dir, name, s, log, progress)
        on_ready(name, paths[name])
    return paths


def _pool(workers: int):
    """Worker processes for the fine-tunes (:mod:`t3unlearn.workers`), or a block without any for one."""
    from contextlib import nullcontext

    from t3unlearn.workers import Workers

    return Workers(workers, preload=("t3unlearn.world.train", "transformers", "transformers.models.llama")) \
        if workers > 1 else nullcontext()


def _fine_tune_workers(jobs: int | str, s: TrainSettings, todo: int) -> int:
    """How many processes fine-tune: one per model up to ``jobs``; 1 when the recipe leaves the thread count
    to torch (its bits would then depend on where it ran)."""
    from t3unlearn.workers import choose_jobs

    if todo < 2 or not s.threads:
        return 1
    return min(todo, choose_jobs(jobs, threads=s.threads))


def _fine_tune(world_dir: Path, name: str, s: TrainSettings, log, progress: bool) -> dict[str, Any]:
    """Fine-tune ``name`` from the cached pretrained base and save it (this process, its torch threads);
    returns the training log."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(models_root(world_dir, s, base=True) / "tokenizer"))
    pre_examples = _examples(tokenizer, _read(world_dir, "pretrain"), s.max_length)
    items = _read(world_dir, name)
    model, _ = _load(model_path(world_dir, s, "pretrained"))
    examples = _examples(tokenizer, items, s.max_length)
    log(f"fine-tuning '{name}' on {len(items)} items for {s.finetune_epochs} epochs")
    info = train_loop(model, examples, s, epochs=s.finetune_epochs, seed=s.seed, desc=name, progress=progress,
                      extra=pre_examples)
    common = {"world": str(world_dir), "settings": asdict(s), "train_version": TRAIN_VERSION,
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    _save(model, tokenizer, model_path(world_dir, s, name), {**common, "name": name, "data": name, **info})
    log(f"  {name}: {info['seconds']:.1f}s, final answer loss {info['epoch_loss'][-1]:.3f}")
    return info


def fine_tune_job(world_dir: str, name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """A worker's job (:mod:`t3unlearn.workers`): :func:`_fine_tune` on the recipe's thread count, printing its
    lines; returns the training log's seconds."""
    from t3unlearn.io import torch_threads

    s = TrainSettings(**settings)
    with torch_threads(s.threads):
        info = _fine_tune(Path(world_dir), name, s, print, True)
    return {k: info[k] for k in ("seconds", "cpu_seconds", "threads")}


def _fine_tune_in_workers(pool, world_dir: Path, names: list[str], s: TrainSettings, log, on_ready) -> None:
    """Fine-tune ``names`` side by side, one job each in ``pool`` (:class:`t3unlearn.workers.Workers`);
    ``on_ready(name)`` as each finishes."""
    from concurrent.futures import as_completed

    log(f"fine-tuning {', '.join(repr(n) for n in names)} side by side: {min(pool.n, len(names))} processes, "
        f"{s.threads} torch thread(s) each (the same bits as one after the other)")
    running = {pool.submit(n, fine_tune_job, str(world_dir), n, asdict(s)): n for n in names}
    for future in as_completed(running):
        name, info = running[future], future.result()
        log(f"  {name}: trained in a worker, {info['seconds']:.1f} s wall, {info['cpu_seconds']:.1f} CPU s")
        on_ready(name)


def _ensure_base(world_dir: Path, s: TrainSettings, base_root: Path, log, progress: bool) -> Path:
    """The tokenizer and the pretrained base (trained if missing); returns the base's directory."""
    import time

    import torch
    from transformers import AutoTokenizer

    from t3unlearn.io import atomic_dir

    if not (base_root / "tokenizer" / "tokenizer.json").is_file():
        t0 = time.perf_counter()
        tok = train_tokenizer(world_dir, s.vocab_size)
        with atomic_dir(base_root / "tokenizer") as tmp:
            tok.save_pretrained(tmp)
        log(f"tokenizer: {len(tok)} tokens, trained on {', '.join(f + '.jsonl' for f in BASE_FILES)} in {time.perf_counter() - t0:.1f}s")
    tokenizer = AutoTokenizer.from_pretrained(str(base_root / "tokenizer"))
    pre_path = model_path(world_dir, s, "pretrained")
    if not _done(pre_path):
        common = {"world": str(world_dir), "settings": asdict(s), "train_version": TRAIN_VERSION,
                  "torch": torch.__version__, "threads": torch.get_num_threads()}
        pre_items = _read(world_dir, "pretrain")
        pre_examples = _examples(tokenizer, pre_items, s.max_length)
        model = new_model(tokenizer, s)
        n = sum(p.numel() for p in model.parameters())
        log(f"pretraining a {n / 1e6:.2f}M-parameter Llama on {len(pre_items)} items for {s.pretrain_epochs} epochs")
        info = train_loop(model, pre_examples, s, epochs=s.pretrain_epochs, seed=s.seed, desc="pretrained", progress=progress)
        _save(model, tokenizer, pre_path, {**common, "name": "pretrained", "data": "pretrain", **info})
        log(f"  pretrained: {info['seconds']:.1f}s, final answer loss {info['epoch_loss'][-1]:.3f}")
    return pre_path
