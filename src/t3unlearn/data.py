"""Question/answer data: one loader for every source, and tokenization with answer masks.

Sources (``SOURCE[:CONFIG]``):

- ``tofu:forget10`` — TOFU: the local copy in ``$T3UNLEARN_TOFU_DIR`` when that is set, else
  ``locuslab/TOFU`` from the Hugging Face hub (any ``org/name`` hub id works the same way);
- ``DIR:forget10`` — a local directory holding ``forget10.jsonl`` / ``.json`` / ``.parquet``
  (a built world is such a directory; the command line also takes ``world:forget10``, resolved by
  :func:`t3unlearn.benchmarks.resolve_data`);
- ``FILE.jsonl`` / ``.json`` / ``.parquet`` / ``.csv`` — one file in TOFU's schema.

Every item is a ``question`` and an ``answer`` (plus ``paraphrased_answer`` and
``perturbed_answer`` for the perturbed configs) and an ``index`` (added when absent).

Tokenization follows TOFU: question and answer are formatted with the model's chat template
when it has one, else ``Question: {q}\\nAnswer: {a}``; labels are the answer tokens plus the
final EOS, and the prompt's labels are masked with ``-100``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from t3unlearn.errors import DataError

IGNORE_INDEX = -100
HUB_ALIASES = {"tofu": "locuslab/TOFU"}
TOFU_DIR_ENV = "T3UNLEARN_TOFU_DIR"  # a local copy of TOFU's configs, read instead of the hub
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
NOT_CONFIGS = ("world.json", "idk.jsonl")  # files of a built world that are not question/answer configs
PLAIN_TEMPLATE = "Question: {question}\nAnswer:"


# --------------------------------------------------------------------------- loading


def parse_source(spec: str, config: str | None = None) -> tuple[str, str | None]:
    """Split ``SOURCE[:CONFIG]``; an explicit ``config`` argument wins."""
    spec = str(spec).strip()
    if not spec:
        raise DataError("empty data source; give e.g. world:forget10, tofu:forget10 or a .jsonl file.")
    if ":" in spec and not Path(spec).exists():
        source, _, cfg = spec.rpartition(":")
        return source, config or cfg or None
    return spec, config


def resolve_source(spec: str, config: str | None = None) -> tuple[str, str | None, str]:
    """Return ``(location, config, kind)`` with kind one of ``file``, ``dir``, ``hub``."""
    source, config = parse_source(spec, config)
    if source == "world" or source.startswith("world-"):
        raise DataError(f"{spec!r} names the embedded world; resolve it first with "
                        "t3unlearn.benchmarks.resolve_data (the command line does), or give the world's directory.")
    path = Path(source).expanduser()
    if path.is_file():
        return str(path), config, "file"
    if path.is_dir():
        return str(path), config, "dir"
    if source.lower() == "tofu" and os.environ.get(TOFU_DIR_ENV, "").strip():
        local = Path(os.environ[TOFU_DIR_ENV].strip()).expanduser()
        if not local.is_dir():
            raise DataError(f"${TOFU_DIR_ENV}={local} is not a directory; point it at a copy of TOFU's configs "
                            "(forget10_perturbed.jsonl, ...) or unset it to read TOFU from the hub.")
        return str(local), config, "dir"
    if source.lower() in HUB_ALIASES:
        return HUB_ALIASES[source.lower()], config, "hub"
    if source.count("/") == 1 and not source.startswith((".", "/", "~")) and not path.suffix:
        return source, config, "hub"
    raise DataError(
        f"data source {spec!r} is neither an existing file or directory nor a hub id; "
        "give tofu:CONFIG, DIR:CONFIG, a .jsonl/.json/.parquet/.csv file or (on the command line) world:CONFIG."
    )


def _configs(directory: Path) -> list[str]:
    """The configs a directory offers (not a built world's world.json nor its IdkDPO answers, idk.jsonl)."""
    return sorted(p.stem for p in directory.iterdir() if p.suffix in DATA_SUFFIXES and p.name not in NOT_CONFIGS)


def _find_config_file(directory: Path, config: str | None) -> Path:
    if config is None:
        available = _configs(directory)
        raise DataError(
            f"{directory} is a directory; name a config as {directory}:CONFIG "
            f"(available: {', '.join(available) or 'none'})."
        )
    for suffix in DATA_SUFFIXES:
        candidate = directory / f"{config}{suffix}"
        if candidate.is_file():
            return candidate
    if (directory / config).is_dir():
        return directory / config
    available = _configs(directory)
    raise DataError(
        f"no config {config!r} in {directory} (looked for {config}.jsonl/.json/.parquet/.csv); "
        f"available: {', '.join(available) or 'none'}."
    )


def _load_file(path: Path):
    import datasets

    datasets.disable_progress_bars()
    if path.is_dir():
        try:
            return datasets.load_from_disk(str(path))
        except Exception as exc:  # noqa: BLE001 - datasets raises many types here
            raise DataError(f"could not load the dataset directory {path}: {exc}") from None
    builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
    if builder is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl, .json, .parquet or .csv.")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty; it must hold question/answer items.")
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its log line on a bad file: the error below says it
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as exc:  # noqa: BLE001
        bad = _bad_json_line(path) if builder == "json" else None
        if bad:
            raise DataError(f"{path} is not valid JSON: {bad}; fix or remove that line (the file is truncated or corrupt; "
                            'each item is one {"question": ..., "answer": ...} object).') from None
        raise DataError(f"could not read {path} as {builder} ({type(exc).__name__}: {exc}); the file is corrupt or not in TOFU's schema.") from None
    finally:
        datasets.logging.set_verbosity(verbosity)


def _bad_json_line(path: Path) -> str | None:
    """Where a JSON lines file (or a .json array) stops being valid, as "line N (WHY)"; None if it parses."""
    import json

    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):  # one JSON array
        try:
            json.loads(text)
        except ValueError as exc:
            return _where(exc.lineno, exc)
        return None
    for n, line in enumerate(text.splitlines(), 1):
        try:
            item = json.loads(line) if line.strip() else {}
        except ValueError as exc:
            return _where(n, exc)
        if not isinstance(item, dict):
            return f"line {n} (not a JSON object)"
    return None


def _where(line: int, exc) -> str:
    return f"line {line}, column {exc.colno} ({exc.msg.removesuffix(' starting at')})"


def _load_hub(repo: str, config: str | None, split: str):
    import datasets

    try:
        return datasets.load_dataset(repo, name=config, split=split)
    except Exception as exc:  # noqa: BLE001
        text = f"{type(exc).__name__}: {exc}"
        offline = any(k in text for k in ("Connection", "offline", "resolve", "Network", "Max retries", "couldn't reach", "Couldn't reach"))
        hint = (
            "the hub cannot be reached (no network?). Load it once where there is a network "
            "(it is then cached), or pass a local directory or .jsonl file in the same schema"
            if offline
            else "check the dataset id and config name"
        )
        what = f"{repo} config {config!r}" if config else repo
        raise DataError(f"could not load {what} from the Hugging Face hub: {hint}. ({text[:300]})") from None


def load_qa(
    spec: str,
    config: str | None = None,
    *,
    split: str = "train",
    require: Sequence[str] = ("question", "answer"),
    what: str = "data set",
):
    """Load a question/answer set as a ``datasets.Dataset``; see the module doc for sources.

    Checks that the set is non-empty and that every item has the ``require``d fields as
    non-empty values; adds ``index`` (0..N-1) when the source has none.
    """
    location, config, kind = resolve_source(spec, config)
    if kind == "hub":
        ds = _load_hub(location, config, split)
    elif kind == "dir":
        ds = _load_file(_check_utf8(_find_config_file(Path(location), config)))
    else:
        ds = _load_file(_check_utf8(Path(location)))
    if hasattr(ds, "keys") and not hasattr(ds, "column_names"):  # a DatasetDict
        if split not in ds:
            raise DataError(f"{spec}: no split {split!r}; available: {', '.join(ds.keys())}.")
        ds = ds[split]
    label = f"{what} {spec}" + (f" (config {config})" if config and config not in spec else "")
    validate_qa(ds, require=require, label=label)
    if "index" not in ds.column_names:
        ds = ds.add_column("index", list(range(len(ds))))
    return ds


def _check_utf8(path: Path) -> Path:
    """``path`` itself, or a DataError naming the line of the first byte that is not UTF-8 (parquet is binary)."""
    import codecs

    if path.suffix == ".parquet" or not path.is_file():
        return path
    decoder, line = codecs.getincrementaldecoder("utf-8")(), 1
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line += chunk[: exc.start].count(b"\n")
                raise DataError(f"{path} is not UTF-8 text: line {line} holds the byte 0x{chunk[exc.start]:02x}; "
                                "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8).") from None
            line += chunk.count(b"\n")
    return path


def validate_qa(ds, *, require: Sequence[str] = ("question", "answer"), label: str = "data set") -> None:
    """Raise :class:`DataError` if ``ds`` is empty or misses / blanks a required field."""
    if len(ds) == 0:
        raise DataError(f"{label} is empty; it must hold at least one question/answer item.")
    missing = [f for f in require if f not in ds.column_names]
    if missing:
        raise DataError(
            f"{label} lacks field(s) {', '.join(missing)} (has: {', '.join(ds.column_names)}); "
            "each item needs a 'question' and an 'answer' as in TOFU."
        )
    for field in require:
        for i, value in enumerate(ds[field]):
            if value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value):
                raise DataError(f"{label}: item {i} has an empty '{field}'; fill it in or drop the item.")
            if field in ("question", "answer") and not isinstance(value, str):
                kind = type(value).__name__
                raise DataError(f"{label}: item {i}'s '{field}' is {'an' if kind[0] in 'aeiou' else 'a'} {kind}, not text; "
                                "every question and answer must be a string.")
    _check_perturbation_fields(ds, label)


def _check_perturbation_fields(ds, label: str) -> None:
    """TOFU's ``paraphrased_answer`` (text) and ``perturbed_answer`` (a list of texts), where a set has them (None: an
    item without them, in a file where others have them)."""
    for i, value in enumerate(ds["paraphrased_answer"] if "paraphrased_answer" in ds.column_names else []):
        if value is not None and not isinstance(value, str):
            raise DataError(f"{label}: item {i}'s 'paraphrased_answer' is {type(value).__name__}, not text; write it as "
                            "a string, as in TOFU.")
    for i, value in enumerate(ds["perturbed_answer"] if "perturbed_answer" in ds.column_names else []):
        if value is not None and (not isinstance(value, list) or not all(isinstance(x, str) for x in value)):
            raise DataError(f"{label}: item {i}'s 'perturbed_answer' is {type(value).__name__}, not a list of texts; write "
                            'it as a list of wrong answers, as in TOFU (["...", "..."]), even for one.')


def check_disjoint(forget, retain) -> None:
    """Forget and retain sets must not share a question: that asks to forget and keep the same fact."""
    retain_q = {q.strip() for q in retain["question"]}
    shared = [q for q in forget["question"] if q.strip() in retain_q]
    if shared:
        raise DataError(
            f"forget and retain sets overlap in {len(shared)} question(s), e.g. {shared[0]!r}; "
            "remove them from the retain set (an item cannot be both forgotten and kept)."
        )


def check_holdout(holdout, forget, retain=None, name: str = "the holdout set") -> None:
    """A calibration holdout stands for items the model never trained on: it must share no question with the forget
    set (calibration would match the forget answers to themselves) nor with the retain set (the head is trained to
    keep those, and the model was fine-tuned on them); ``retain=None``: not checked."""
    held = {q.strip() for q in holdout["question"]}
    for what, ds in (("forget", forget), ("retain", retain)):
        shared = [] if ds is None else [q for q in ds["question"] if q.strip() in held]
        if shared:
            raise DataError(f"{name} shares {len(shared)} question(s) with the {what} set, e.g. {shared[0]!r}; the holdout "
                            "must be items the model never trained on, drawn like the forget set (e.g. authors outside "
                            f"your fine-tuning data): remove them from one of the two sets.")


# --------------------------------------------------------------------------- tokenization


def ensure_pad_token(tokenizer) -> int:
    """Give a tokenizer without a pad token its EOS as pad; return the pad id."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise DataError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token.")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer.pad_token_id


@dataclass
class QAExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on the prompt
    prompt_len: int


# The reference framework's chat settings (its configs/model/*.yaml): every chat model it evaluates is
# given this system message, except those whose template refuses a system role (Gemma), and Llama-3.x
# templates get this date (otherwise they write today's date into the prompt).
REFERENCE_SYSTEM_PROMPT = "You are a helpful assistant."
REFERENCE_DATE_STRING = "10 Apr 2025"


class QAFormatter:
    """Turns questions and answers into token ids the way TOFU's reference framework scores them.

    ``template``: ``"auto"`` (chat template if the tokenizer has one, else plain), ``"chat"`` or
    ``"plain"``. Plain: ``Question: {q}\nAnswer:`` (with the tokenizer's special tokens) followed by
    the tokens of ``" " + answer`` and EOS. Chat: the conversation [system, user, assistant] is rendered
    by the tokenizer's template and tokenized whole; the answer's labels are the tokens after those of
    the prompt rendered with the generation prompt (the reference's split), and EOS is appended when the
    template does not end with it. ``system_prompt`` (``"auto"``: :data:`REFERENCE_SYSTEM_PROMPT` when
    the template accepts a system message, else none; ``None``: none) and ``date_string`` (for Llama-3.x
    templates) default to the reference's, so prompts are byte-identical to those behind its published
    logs. Items longer than ``max_length`` tokens are cut there and EOS is put back at the end.
    """

    def __init__(self, tokenizer, *, max_length: int = 512, template: str = "auto",
                 system_prompt: str | None = "auto", date_string: str | None = REFERENCE_DATE_STRING):
        if template not in ("auto", "chat", "plain"):
            raise DataError(f"template must be auto, chat or plain, not {template!r}.")
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if template == "chat" and not has_chat:
            raise DataError("template='chat' but the tokenizer has no chat template; use 'plain' or 'auto'.")
        if max_length < 2:
            raise DataError(f"max_length must be at least 2 tokens, not {max_length}.")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.use_chat = has_chat if template == "auto" else template == "chat"
        self.pad_id = ensure_pad_token(tokenizer)
        if tokenizer.eos_token_id is None:
            raise DataError("the tokenizer has no EOS token; TOFU scoring appends one to every answer.")
        self.eos_id = tokenizer.eos_token_id
        self.date_string = date_string
        self.system_prompt = self._accepted_system_prompt(system_prompt) if self.use_chat else None

    # ------------------------------------------------------------------ chat rendering
    def _render(self, messages: list[dict], *, generation_prompt: bool) -> str:
        extra = {"date_string": self.date_string} if self.date_string is not None else {}
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt, **extra)

    def _accepted_system_prompt(self, system_prompt: str | None) -> str | None:
        if system_prompt != "auto":
            return system_prompt or None
        try:
            self._render([{"role": "system", "content": REFERENCE_SYSTEM_PROMPT}, {"role": "user", "content": "?"}],
                         generation_prompt=True)
        except Exception:  # noqa: BLE001 - the template raises (jinja's TemplateError) on a system role
            return None
        return REFERENCE_SYSTEM_PROMPT

    def _messages(self, question: str, answer: str | None = None) -> list[dict]:
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        msgs.append({"role": "user", "content": question})
        if answer is not None:
            msgs.append({"role": "assistant", "content": answer})
        return msgs

    # ------------------------------------------------------------------ texts and ids
    def prompt_text(self, question: str) -> str:
        if self.use_chat:
            return self._render(self._messages(question), generation_prompt=True)
        return PLAIN_TEMPLATE.format(question=question)

    def prompt_ids(self, question: str) -> list[int]:
        return self._ids_batch([self.prompt_text(question)], add_special_tokens=not self.use_chat)[0]

    def encode(self, question: str, answer: str) -> QAExample:
        return self.encode_batch([question], [answer])[0]

    def encode_many(self, questions: Iterable[str], answers: Iterable[str]) -> list[QAExample]:
        return self.encode_batch(list(questions), list(answers))

    def _ids_batch(self, texts: list[str], *, add_special_tokens: bool) -> list[list[int]]:
        """Token ids of ``texts``: straight from a fast tokenizer's Rust backend (skipping the
        per-item Python conversion) when it agrees with ``tokenizer(...)`` on the first text."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None) if getattr(self.tokenizer, "is_fast", False) else None
        if backend is not None:
            ids = [e.ids for e in backend.encode_batch(texts, add_special_tokens=add_special_tokens)]
            if ids[0] == list(self.tokenizer(texts[0], add_special_tokens=add_special_tokens)["input_ids"]):
                return ids
        return [list(x) for x in self.tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]]

    def encode_batch(self, questions: Sequence[str], answers: Sequence[str]) -> list[QAExample]:
        """Every (question, answer) as a :class:`QAExample`, with one batched tokenizer call per text kind."""
        questions, answers = list(questions), list(answers)
        if len(questions) != len(answers):
            raise DataError(f"{len(questions)} questions but {len(answers)} answers.")
        if not questions:
            return []
        prompts = self._ids_batch([self.prompt_text(q) for q in questions], add_special_tokens=not self.use_chat)
        if self.use_chat:
            fulls = self._ids_batch([self._render(self._messages(q, a), generation_prompt=False) for q, a in zip(questions, answers)],
                                    add_special_tokens=False)
        else:
            bodies = self._ids_batch([" " + a.strip() for a in answers], add_special_tokens=False)
            fulls = [list(p) + list(b) for p, b in zip(prompts, bodies)]
        out = []
        for q, prompt, full in zip(questions, prompts, fulls):
            n_prompt = len(prompt)
            if n_prompt >= self.max_length:
                raise DataError(f"question too long for max_length={self.max_length} ({n_prompt} tokens): {q[:80]!r}…")
            full = list(full[: self.max_length])
            if full[-1] != self.eos_id:
                full.append(self.eos_id)  # the reference appends EOS after cutting, and where the template has none
            out.append(QAExample(full, [IGNORE_INDEX] * n_prompt + full[n_prompt:], n_prompt))
        return out


def collate(examples: Sequence[QAExample], pad_id: int, *, padding_side: str = "right"):
    """Pad a batch: ``input_ids``, ``attention_mask`` and ``labels`` (``-100`` on padding)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        sl = slice(0, n) if padding_side == "right" else slice(width - n, width)
        ids[row, sl] = torch.tensor(e.input_ids)
        mask[row, sl] = 1
        labels[row, sl] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batched(items: Sequence, batch_size: int):
    """Consecutive slices of ``items`` of at most ``batch_size``."""
    if batch_size < 1:
        raise DataError(f"batch size must be >= 1, not {batch_size}.")
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]

