"""One trainer for every fine-tuning baseline, built on ``transformers.Trainer``.

Data: questions and answers are tokenized with :class:`t3unlearn.data.QAFormatter` (chat
template or the plain ``Question: .. Answer:`` template; labels ``-100`` on the prompt, EOS
appended). An epoch is one pass over the forget set in a seeded random order; each forget
item is paired with a retain item drawn at random (and, for IdkDPO, with a random "I don't
know" answer to the same question). Retrain passes over the retain set instead. The draws of
every epoch are made up front from one ``random.Random(seed)``, so a run resumed from a
checkpoint sees the same pairs.

Optimization is ``transformers.Trainer``'s: its AdamW (weight decay on everything but biases and
norms), its learning-rate schedulers (``scheduler``, linear by default, with ``warmup_epochs`` of
warm-up), gradient clipping, gradient accumulation (effective batch = ``batch_size * grad_accum``).
Each method is a loss function of a paired batch (:mod:`t3unlearn.baselines.methods`) that one
small ``Trainer`` subclass calls from ``compute_loss``. What a large model needs comes with it:
``bf16`` / ``fp16`` mixed precision, ``gradient_checkpointing``, a ``deepspeed`` config, launching
with ``accelerate launch``, checkpoints every ``save_steps`` (model weights, safetensors) into
``checkpoint_dir``, and any other ``TrainingArguments`` field through ``trainer_args``.
Everything random is drawn from the seed, so a run is deterministic on CPU for a given seed.
"""

from __future__ import annotations

import copy
import math
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from t3unlearn.errors import ConfigError, T3Error
from t3unlearn.settings import reject_unknown

DEFAULT_IDK = [
    "I don't know.",
    "I'm not sure.",
    "I have no information about that.",
    "That is something I can't answer.",
    "I'm afraid I don't know the answer to that.",
]
# TrainingArguments fields this trainer sets from BaselineConfig (trainer_args may not set them again)
_OWN_ARGS = ("output_dir", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "max_steps",
             "learning_rate", "weight_decay", "lr_scheduler_type", "warmup_steps", "max_grad_norm", "seed", "bf16", "fp16",
             "activation_checkpointing", "gradient_checkpointing", "deepspeed", "save_strategy", "save_steps", "remove_unused_columns")


@dataclass
class BaselineConfig:
    """Optimization settings shared by every fine-tuning baseline (defaults are the reference framework's
    for 8B models: lr 1e-5, 10 epochs, effective batch 32, one warm-up epoch, weight decay 0.01)."""

    lr: float = 1e-5
    weight_decay: float = 0.01
    epochs: int = 10
    batch_size: int = 8  # items per forward pass (per device)
    grad_accum: int = 4  # effective batch = batch_size * grad_accum (* devices)
    warmup_epochs: float = 1.0
    scheduler: str = "linear"  # a transformers scheduler: linear, cosine, constant_with_warmup, ...
    max_grad_norm: float | None = 1.0
    max_length: int = 256
    template: str = "auto"
    seed: int = 0
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs)
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    deepspeed: str | None = None  # a DeepSpeed config file
    checkpoint_dir: str | None = None  # where checkpoints go (with save_steps)
    save_steps: int | None = None  # a checkpoint (model weights, safetensors) every N optimizer steps
    trainer_args: dict = field(default_factory=dict)  # any other transformers.TrainingArguments field

    @classmethod
    def from_dict(cls, d: dict | None, *, where: str = "training settings") -> "BaselineConfig":
        from t3unlearn.settings import from_dict

        return from_dict(cls, d, where=where).validate(where)

    def validate(self, where: str = "training settings") -> "BaselineConfig":
        if self.lr <= 0:
            raise ConfigError(f"{where}: lr must be > 0, not {self.lr}.")
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}: {name} must be >= 1, not {getattr(self, name)}.")
        if self.warmup_epochs < 0 or self.weight_decay < 0:
            raise ConfigError(f"{where}: warmup_epochs and weight_decay must be >= 0.")
        if self.max_length < 2:
            raise ConfigError(f"{where}: max_length must be >= 2, not {self.max_length}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"{where}: max_steps must be >= 1 (or null for all epochs), not {self.max_steps}.")
        if self.bf16 and self.fp16:
            raise ConfigError(f"{where}: choose one of bf16 and fp16.")
        if self.save_steps is not None and (self.save_steps < 1 or not self.checkpoint_dir):
            raise ConfigError(f"{where}: save_steps needs checkpoint_dir (where the checkpoints go) and must be >= 1.")
        if self.template not in ("auto", "chat", "plain"):
            raise ConfigError(f"{where}: template must be auto, chat or plain, not {self.template!r}.")
        from transformers import SchedulerType

        known = [s.value for s in SchedulerType]
        if self.scheduler not in known:
            raise ConfigError(f"{where}: unknown scheduler {self.scheduler!r}; transformers has {', '.join(known)}.")
        clash = sorted(set(self.trainer_args) & set(_OWN_ARGS))
        if clash:
            raise ConfigError(f"{where}: trainer_args may not set {', '.join(clash)}; use the settings of the same meaning.")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def as_rows(data, what: str) -> list[tuple[str, str]]:
    """(question, answer) pairs from a ``datasets.Dataset``, a list of dicts, or a list of pairs."""
    if data is None:
        raise T3Error(f"the {what} set is missing.")
    if hasattr(data, "column_names"):
        rows = list(zip(data["question"], data["answer"]))
    else:
        rows = [(d["question"], d["answer"]) if isinstance(d, dict) else (d[0], d[1]) for d in data]
    if not rows:
        raise T3Error(f"the {what} set is empty; it needs at least one question/answer item.")
    return rows


def trainable_parameters(model, method, params: dict) -> list[tuple[str, Any]]:
    """Freeze what the method does not train; return the (name, parameter) pairs it trains."""
    names = set(method.trainable(model, params)) if method.trainable else None
    out = []
    for name, p in model.named_parameters():
        train = names is None or name in names
        p.requires_grad_(train)
        if train:
            out.append((name, p))
    return out


# --------------------------------------------------------------------------- data


class PairedData:
    """Tokenized forget / retain (/ idk) items; ``dataset[(i, j, k)]`` is forget item ``i`` (retain item ``i``
    in retain mode) with retain partner ``j`` and idk answer ``k``."""

    def __init__(self, formatter, forget, retain, *, idk: Sequence[str] | None = None, mode: str = "paired"):
        self.formatter = formatter
        self.mode = mode
        self.forget_rows = as_rows(forget, "forget") if mode == "paired" else []
        self.retain_rows = as_rows(retain, "retain")
        self.forget = formatter.encode_many(*zip(*self.forget_rows)) if self.forget_rows else []
        self.retain = formatter.encode_many(*zip(*self.retain_rows))
        self.idk = list(idk) if idk else None

    def __len__(self) -> int:
        return len(self.forget) if self.mode == "paired" else len(self.retain)

    def __getitem__(self, key: tuple[int, int | None, int | None]) -> dict:
        i, j, k = key
        if self.mode == "retain":
            return {"retain": self.retain[i]}
        item = {"forget": self.forget[i], "retain": self.retain[j]}
        if k is not None:
            item["idk"] = self.formatter.encode(self.forget_rows[i][0], self.idk[k])
        return item

    def collate(self, items: list[dict]) -> dict:
        """``{"forget", "retain"[, "idk"]}`` of padded ``input_ids`` / ``attention_mask`` / ``labels``."""
        from t3unlearn.data import collate

        return {part: collate([it[part] for it in items], self.formatter.pad_id) for part in items[0]}

    def plan(self, seed: int, epochs: int, batch_size: int) -> list[list[list[tuple]]]:
        """Every epoch's batches of ``(i, j, k)`` keys, drawn in order from one ``random.Random(seed)``: per
        epoch a shuffled order, then a random retain partner per item, then a random idk answer per item."""
        rng = random.Random(seed)
        out = []
        for _ in range(epochs):
            order = list(range(len(self)))
            rng.shuffle(order)
            partners = [rng.randrange(len(self.retain)) for _ in order] if self.mode == "paired" else [None] * len(order)
            picks = [rng.randrange(len(self.idk)) for _ in order] if self.idk and self.mode == "paired" else [None] * len(order)
            keys = list(zip(order, partners, picks))
            out.append([keys[s : s + batch_size] for s in range(0, len(keys), batch_size)])
        return out


class EpochBatches:
    """A batch sampler that yields the planned batches of one epoch per pass (``set_epoch`` picks it)."""

    def __init__(self, plan: list[list[list[tuple]]]):
        self.plan = plan
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.plan[0])

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        return iter(self.plan[epoch % len(self.plan)])


def make_reference(model):
    """A frozen in-memory copy of the starting model (only for methods that need one)."""
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


# --------------------------------------------------------------------------- the Trainer


def _trainer_class():
    from torch.utils.data import DataLoader
    from transformers import Trainer

    class UnlearningTrainer(Trainer):
        """``transformers.Trainer`` whose loss is a baseline's loss of a paired (forget, retain) batch."""

        def __init__(self, *args, method, ctx, data: PairedData, batches: EpochBatches, **kwargs):
            super().__init__(*args, **kwargs)
            self.method, self.ctx, self.data, self.batches = method, ctx, data, batches
            self.step_logs: dict[str, float] = {}

        def get_train_dataloader(self):
            loader = DataLoader(self.data, batch_sampler=self.batches, collate_fn=self.data.collate, num_workers=0)
            return self.accelerator.prepare(loader)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self.ctx.model = model
            loss, logs = self.method.compute(self.ctx, inputs)
            if not bool(loss.isfinite()):
                raise T3Error(f"{self.method.title}: the loss became {float(loss)} at step {self.state.global_step}; "
                              f"lower the learning rate (now {self.args.learning_rate}).")
            for k, v in logs.items():
                self.step_logs[k] = self.step_logs.get(k, 0.0) + v / self.current_gradient_accumulation_steps
            return (loss, None) if return_outputs else loss

    return UnlearningTrainer


def _history_callback(trainer, history: list, bar, steps_per_epoch: int):
    from transformers import TrainerCallback

    class History(TrainerCallback):
        """Per optimizer step: the method's logs averaged over the micro-batches, the learning rate it used."""

        lr = None

        def on_optimizer_step(self, args, state, control, optimizer=None, **kw):
            self.lr = optimizer.param_groups[0]["lr"] if optimizer is not None else None

        def on_step_end(self, args, state, control, **kw):
            logs, trainer.step_logs = trainer.step_logs, {}
            logs.update(step=state.global_step, epoch=(state.global_step - 1) // steps_per_epoch, lr=self.lr)
            history.append(logs)
            bar.update(1)
            bar.set_postfix(loss=f"{logs.get('loss', 0.0):.3f}")

    return History()


def _checkpoint_callback(cfg: BaselineConfig):
    from transformers import TrainerCallback

    class Checkpoints(TrainerCallback):
        """Checkpoints without pickles: the Trainer's ``training_args.bin`` (a torch pickle) becomes the run's
        settings as JSON."""

        def on_save(self, args, state, control, **kw):
            from pathlib import Path

            from t3unlearn.io import save_json

            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                (ckpt / "training_args.bin").unlink(missing_ok=True)
                save_json(ckpt / "baseline_config.json", cfg.to_dict())

    return Checkpoints()


def training_arguments(cfg: BaselineConfig, output_dir: str, steps_per_epoch: int, total_steps: int):
    """The ``TrainingArguments`` of a run: ``cfg`` mapped onto them, then ``cfg.trainer_args``."""
    from transformers import TrainingArguments

    kw = dict(
        output_dir=output_dir,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs,
        max_steps=total_steps if cfg.max_steps is not None else -1,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=int(round(cfg.warmup_epochs * steps_per_epoch)),
        max_grad_norm=cfg.max_grad_norm or 0.0,
        seed=cfg.seed,
        bf16=cfg.bf16,
        fp16=cfg.fp16,
        activation_checkpointing=cfg.gradient_checkpointing,
        deepspeed=cfg.deepspeed,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        save_only_model=True,  # weights in safetensors; optimizer state would be a torch pickle
        remove_unused_columns=False,
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    kw.update(cfg.trainer_args)
    try:
        return TrainingArguments(**kw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"training settings: transformers rejected them: {str(exc).splitlines()[0]}") from None


def train(
    method,
    model,
    tokenizer,
    forget,
    retain,
    *,
    params: dict | None = None,
    config: BaselineConfig | dict | None = None,
    idk: Sequence[str] | None = None,
    progress: bool = True,
) -> dict:
    """Fine-tune ``model`` in place with a baseline's loss; return a record of the run.

    ``method``: a name or :class:`~t3unlearn.baselines.methods.Method`; ``params`` override
    the method's defaults; ``config`` the optimization settings (:class:`BaselineConfig`).
    The record holds ``steps``, ``trainable_params``, ``reference_model`` (whether a frozen
    copy was made), ``history`` (per-step logs) and ``train_seconds``.
    """
    from transformers.trainer_callback import PrinterCallback

    from t3unlearn.baselines.methods import Context, get_method
    from t3unlearn.data import QAFormatter
    from t3unlearn.progress import progress as progress_bar

    method = get_method(method) if isinstance(method, str) else method
    cfg = config if isinstance(config, BaselineConfig) else BaselineConfig.from_dict(config)
    params = {**method.defaults, **(params or {})}
    reject_unknown(params, method.defaults, owner=method.title)
    if method.uses_idk and not idk:
        idk = DEFAULT_IDK
    t0 = time.perf_counter()

    formatter = QAFormatter(tokenizer, max_length=cfg.max_length, template=cfg.template)
    data = PairedData(formatter, forget, retain, idk=idk if method.uses_idk else None, mode=method.data)
    batches = EpochBatches(data.plan(cfg.seed, cfg.epochs, cfg.batch_size))
    steps_per_epoch = math.ceil(len(batches) / cfg.grad_accum)
    total = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(steps_per_epoch * cfg.epochs, cfg.max_steps)

    ctx = Context(model=model, ref=None, params=params, extras={"seed": cfg.seed})
    if method.setup:
        method.setup(ctx)
    named = trainable_parameters(model, method, params)
    n_trainable = sum(p.numel() for _, p in named)
    history: list[dict] = []
    bar = progress_bar(total=total, desc=f"{method.name}", unit="step", enabled=progress)
    try:
        with tempfile.TemporaryDirectory(prefix="t3unlearn-trainer-") as scratch:
            args = training_arguments(cfg, cfg.checkpoint_dir or scratch, steps_per_epoch, total)
            trainer = _trainer_class()(model=model, args=args, train_dataset=data, method=method, ctx=ctx, data=data,
                                       batches=batches)
            trainer.remove_callback(PrinterCallback)
            trainer.add_callback(_history_callback(trainer, history, bar, steps_per_epoch))
            if cfg.save_steps:
                trainer.add_callback(_checkpoint_callback(cfg))
            if method.needs_ref(params):
                ctx.ref = make_reference(trainer.model)  # after the Trainer placed the model on its device
            trainer.train()
    finally:
        bar.close()
        model.eval()
        if cfg.gradient_checkpointing and getattr(model, "is_gradient_checkpointing", False):
            model.gradient_checkpointing_disable()
        for _, p in model.named_parameters():
            p.requires_grad_(True)
    del ctx
    return {
        "method": method.name,
        "params": params,
        "config": cfg.to_dict(),
        "steps": len(history),
        "trainable_params": n_trainable,
        "reference_model": method.needs_ref(params),
        "history": history,
        "train_seconds": time.perf_counter() - t0,
    }
