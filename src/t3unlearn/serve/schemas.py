"""Request schemas (strict pydantic models) and the numeric bounds that keep the decoding step finite.

Every number that reaches the math is bounded here, so that no request can put an ``inf`` or a ``nan``
into a batch it shares with others (the engine still checks every row and fails a bad one alone):

- the sampling ``temperature`` is 0 (greedy) or in [``MIN_SAMPLING_TEMPERATURE``, 2]: dividing float32
  logits by 1e-45 overflows;
- ``top_p`` is in (0, 1];
- T3's knobs (``t3`` per request, the guidance fields of ``POST /v1/heads``) are generated from
  :class:`~t3unlearn.t3.config.Guidance`'s fields: each is checked as the command line checks it, and kept within
  the server's range in its metadata (``serve``): ``s · logsigmoid(head + bias)`` with ``|s|`` or ``|bias|`` near
  1e300 is ``-inf`` for every token.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, field_validator

from t3unlearn.errors import ModelError
from t3unlearn.serve.errors import APIError
from t3unlearn.serve.middleware import REQUEST_ID
from t3unlearn.t3.config import GUIDANCE_KNOBS, GUIDANCE_META, Guidance, check_knob

log = logging.getLogger("t3unlearn.serve")

MAX_PROMPTS = 64  # prompts in one completions request
MAX_STOP = 4  # stop strings, as OpenAI
MIN_SAMPLING_TEMPERATURE = 0.01  # below it (and above 0) the division by the temperature overflows float32; 0 is greedy


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _unicode(value):
    """``value`` (text, or a list of texts and token ids) unchanged, or a ValueError for text the tokenizer cannot
    encode: JSON's ``\\ud800`` escapes decode to lone surrogates, which are not Unicode characters."""
    for text in [value] if isinstance(value, str) else (value if isinstance(value, list) else []):
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"the text holds a lone surrogate ({text[exc.start]!r} at character {exc.start}), "
                                 "which is not a Unicode character; send valid UTF-8 text") from None
    return value


def _knob_field(name: str, meta: dict):
    """A request field for the guidance knob ``name``, from its :class:`~t3unlearn.t3.config.Guidance` metadata:
    checked by :func:`~t3unlearn.t3.config.check_knob` with the server's range (the command line's message)."""

    def check(value):
        if value is None:
            return None
        try:
            v = check_knob(name, value, serving=True)
        except ModelError as exc:
            raise ValueError(str(exc).rstrip(".")) from None
        return "none" if v is None else v  # "none": an optional knob turned off (Guidance.replace reads it so)

    if meta["choices"]:
        typ, extra = str, {"enum": list(meta["choices"])}
    else:
        typ, extra = (float | Literal["none", "off"]) if meta["optional"] else float, None
    help = meta["help"] + ("; \"none\" turns it off" if meta["optional"] else "")
    return (Annotated[typ | None, AfterValidator(check)], Field(None, description=help, json_schema_extra=extra))


# T3's own knobs (t3unlearn.t3.config.Guidance), one request field each; each None keeps the head's saved value
_GuidanceKnobs = create_model("_GuidanceKnobs", __base__=_Strict,
                              **{name: _knob_field(name, meta) for name, meta in GUIDANCE_META.items()})


class GuidanceFields(_GuidanceKnobs):
    """T3's own knobs (:class:`t3unlearn.t3.config.Guidance`), bounded; each None keeps the head's saved value."""

    def guidance_changes(self) -> dict:
        """The knobs set (not None), by :class:`~t3unlearn.t3.config.Guidance` field name."""
        return Guidance.changes_from(self)


GUIDANCE_FIELDS = GUIDANCE_KNOBS


class T3Knobs(GuidanceFields):
    """A request's ``t3``: changes to the head's saved guidance for this request."""

    def changes(self) -> dict:
        return self.guidance_changes()


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    ignore_eos: bool = False  # vLLM's extension: keep going past EOS (benchmarks)
    t3: T3Knobs | None = None

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v):
        if v is not None and 0 < v < MIN_SAMPLING_TEMPERATURE:
            raise ValueError(f"use 0 for greedy decoding or a temperature of at least {MIN_SAMPLING_TEMPERATURE} "
                             f"(smaller ones overflow), not {v:g}")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        items = [v] if isinstance(v, str) else list(v or [])
        if len(items) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings")
        if any(not x for x in items):
            raise ValueError("stop strings must not be empty")
        return v

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _penalty(cls, v):
        if v not in (None, 0, 0.0):
            raise ValueError("penalties are not supported (only 0)")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v):
        if v:
            raise ValueError("logit_bias is not supported")
        return v


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    _prompt = field_validator("prompt")(_unicode)

    @field_validator("echo")
    @classmethod
    def _echo(cls, v):
        if v:
            raise ValueError("echo is not supported")
        return v

    @field_validator("best_of")
    @classmethod
    def _best_of(cls, v):
        if v not in (None, 1):
            raise ValueError("best_of is not supported (only 1)")
        return v

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, v):
        if v:
            raise ValueError("suffix (insertion) is not supported")
        return v


class TextPart(_Strict):
    type: Literal["text"]
    text: str

    _text = field_validator("text")(_unicode)


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = Field(None, validate_default=True)
    name: str | None = None

    _content = field_validator("content")(_unicode)

    @field_validator("content")
    @classmethod
    def _given(cls, v, info):
        if v is None and info.data.get("role") != "assistant":
            raise ValueError(f"a {info.data.get('role', 'user')} message needs its text as 'content'; only an assistant "
                             "message may leave it null")
        return v

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class HeadRequest(GuidanceFields):
    """``POST /v1/heads``: a head's directory and name, and guidance overriding its saved one."""

    name: str
    path: str
    force: bool = False


def _template_refused(exc: Exception) -> APIError:
    """A 400 for messages the chat template refused: the template's own words when it raised them on purpose
    (``raise_exception`` in the template: e.g. roles that must alternate), else no internals."""
    from jinja2.exceptions import TemplateError

    if type(exc) is TemplateError:  # what raise_exception raises; its subclasses are jinja's own errors
        return APIError(400, f"the model's chat template refused these messages: {exc}"[:300], param="messages")
    log.warning("request %s: the chat template failed on these messages", REQUEST_ID.get(), exc_info=exc)
    return APIError(400, "the model's chat template could not render these messages (check the roles and their "
                    "order: most templates want system?, user, assistant, user, ...).", param="messages")


def chat_prompt_ids(tokenizer, formatter, messages: list[ChatMessage]) -> list[int]:
    """Token ids of a chat prompt: the tokenizer's chat template when it has one (``formatter.use_chat``;
    without a system message, the formatter's, as in training and evaluation), else the project's plain
    template, earlier turns as ``Question: ...\\nAnswer: ...`` lines. One user message gives exactly
    ``formatter.prompt_ids(question)``. Slow for long messages: the app calls it off the event loop."""
    if messages[-1].role != "user":
        raise APIError(400, "the last message must be the user's (the model answers it).", param=f"messages[{len(messages) - 1}].role")
    if formatter.use_chat:
        convo = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in messages]
        system = getattr(formatter, "system_prompt", None)
        if system and convo[0]["role"] != "system":  # the system message heads are trained and evaluated with
            convo.insert(0, {"role": "system", "content": system})
        date = getattr(formatter, "date_string", None)
        try:
            text = tokenizer.apply_chat_template(convo, add_generation_prompt=True, tokenize=False,
                                                 **({"date_string": date} if date is not None else {}))
        except Exception as exc:  # noqa: BLE001 - a template may reject a conversation shape
            raise _template_refused(exc) from None
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(messages) == 1:
        return formatter.prompt_ids(messages[0].text())  # exactly the prompt of training and evaluation
    parts, pending = [], None
    for m in messages[:-1]:
        if m.role in ("system", "developer"):
            parts.append(m.text().strip() + "\n")
        elif m.role == "user":
            if pending is not None:  # two user turns in a row: the first one unanswered
                parts.append(f"Question: {pending}\n")
            pending = m.text()
        else:
            parts.append(f"Question: {pending or ''}\nAnswer: {m.text().strip()}\n")
            pending = None
    if pending is not None:
        parts.append(f"Question: {pending}\n")
    text = "".join(parts) + formatter.prompt_text(messages[-1].text())
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])
