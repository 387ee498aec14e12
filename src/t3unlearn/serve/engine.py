"""The decoding engine: continuous batching of many sequences, for many heads, over one base.

One thread owns the model and runs a loop of steps:

1. *admit*: waiting sequences join while the batch has room (``max_batch``); their prompts are
   prefilled together (left-padded), each gets its first token, and their KV caches are merged
   into the running batch (the shorter side padded on the left, masked);
2. *decode*: one batched forward of the base for every running sequence, whatever head it uses.

A T3 head reads the running mean of the base's final hidden states over the sequence so far; that
pooled vector is the same for every head, so it is kept per sequence next to the KV cache (a sum
and a count) and updated once per step. Only the head product and the tilt differ per row: rows
are grouped by head (one small ``d -> h -> V`` product per group) and by ``(T, s)``:

    guided = log_softmax(base_logits) / T + s * logsigmoid(head(pooled))

the same operations, in the same order, as :class:`t3unlearn.T3ForCausalLM`. A sequence leaves the
batch at the step it finishes (EOS, a stop string, ``max_tokens``, the context, or its client
going away); columns of padding no row needs any more are trimmed from the left.

A sequence can only fail itself: a row whose guided scores or sampling probabilities are not finite,
or whose head fails, finishes with ``finish_reason="error"`` and leaves the batch; the other rows of
that step go on. Only a failure of the shared forward pass fails the whole batch.
"""

from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from t3unlearn.errors import ModelError
from t3unlearn.lm import cache_kwarg

log = logging.getLogger("t3unlearn.serve")

FAILED = "generation failed for this request; the server's log has the details (search it for the request id)."
STOPPED = "the server stopped before this request finished; retry on another replica."


class EngineStopped(RuntimeError):
    """The engine takes no new sequences (it is draining or stopped)."""


class EngineFull(RuntimeError):
    """The waiting queue is full."""


@dataclass
class TokenInfo:
    """One generated token, for ``logprobs``: its text, log-prob and the top alternatives."""

    token_id: int
    text: str
    logprob: float
    top: list[tuple[str, float]]
    start: int = 0  # where its text starts in the sequence's text (a stop string cuts the tokens from there on)


@dataclass(eq=False)
class Sequence:
    """One completion being generated (a request with ``n`` = 3 has three).

    ``emit(seq, delta, tokens, finish_reason)`` is called from the engine thread: with new text
    as it becomes final (stream) and once with ``finish_reason`` set when the sequence ends.
    """

    prompt_ids: list[int]
    head: object | None  # serve.heads.Head, or None for the base
    guidance: object | None = None  # t3unlearn.t3.config.Guidance (T, s, ...) for a head; None: the head's saved one
    max_tokens: int = 16
    sampling_temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None  # None = none; k >= 0: the chosen token and the top k
    seed: int | None = None
    stream: bool = False
    emit: Callable | None = None
    # state
    out_ids: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters of text already emitted
    request_id: str | None = None  # for the log
    first_token_at: float | None = None  # time.perf_counter() when its first token was chosen (metrics)
    finish_reason: str | None = None
    error: str | None = None  # why it failed (finish_reason "error"): a message for the client, no internals
    error_code: str | None = None  # "generation_failed" or "shutting_down"
    cancelled: bool = False
    pending: list = field(default_factory=list)  # TokenInfo not yet emitted
    generator: torch.Generator | None = None


def _seen_rows(seqs: list[Sequence], vocab_size: int, device) -> torch.Tensor:
    """``(n, V)`` bool: the tokens each sequence's context holds (prompt and output so far), for the copy exemption:
    :func:`t3unlearn.t3.guidance.seen_tokens`, as the guided model computes it."""
    from t3unlearn.t3.guidance import seen_tokens

    rows = [s.prompt_ids + s.out_ids for s in seqs]
    ids = torch.full((len(rows), max(map(len, rows))), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
    return seen_tokens(ids.to(device), vocab_size, keep=1)[1]  # -1 (padding) is not a token


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class Engine:
    """Continuous-batching decoder over ``model`` (a frozen ``transformers`` causal LM); see the module doc."""

    def __init__(self, model, tokenizer, *, max_batch: int = 32, max_waiting: int = 1024, context: int | None = None):
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

        from t3unlearn.t3.features import decoder_of, vocab_size_of

        if max_batch < 1:
            raise ModelError(f"max_batch must be >= 1, not {max_batch}.")
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.vocab_size = vocab_size_of(model)
        self.max_batch, self.max_waiting = int(max_batch), int(max_waiting)
        text_cfg = model.config.get_text_config(decoder=True)
        self._cache_config = text_cfg
        probe = DynamicCache(config=text_cfg)
        kinds = {type(layer) for layer in getattr(probe, "layers", [])}
        # Sliding-window layers (Gemma-2/3, ...) keep every key here: rows of different lengths are padded on the
        # left and merged, which a rolling window cannot be; the window is applied by the attention mask, which
        # transformers builds from the positions whatever the cache keeps (memory grows with the context, as for
        # full-attention layers). Other kinds (linear attention, recurrent states) cannot be merged this way.
        self._layers = len(probe.layers) if kinds - {DynamicLayer} else None
        if kinds - {DynamicLayer, DynamicSlidingWindowLayer}:
            raise ModelError(f"t3unlearn serve batches attention KV caches only; {type(model).__name__} also has "
                             f"{', '.join(sorted(k.__name__ for k in kinds - {DynamicLayer, DynamicSlidingWindowLayer}))} layers.")
        limit = getattr(text_cfg, "max_position_embeddings", None) or getattr(text_cfg, "n_positions", None)
        self.context = int(context or limit or 2048)
        eos = set()
        for src in (getattr(getattr(model, "generation_config", None), "eos_token_id", None), tokenizer.eos_token_id):
            if isinstance(src, int):
                eos.add(src)
            elif src:
                eos.update(int(x) for x in src)
        self.eos_ids = eos
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (min(eos) if eos else 0)
        # the decoder's output (final hidden states, after the final norm) is read by a hook that
        # records only this engine's own forward passes
        self._captured: list = []
        self._capture_thread: int | None = None
        self._hook = decoder_of(model).register_forward_hook(self._record)
        # the running batch
        self._seqs: list[Sequence] = []
        self._cache = None
        self._mask = None  # (B, L) long
        self._sum = None  # (B, d) float32: sum of final hidden states over each sequence
        self._count = None  # (B,) float32
        self._last = None  # (B,) long: the last token of each sequence
        # the queue
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._cv = threading.Condition()
        self._accepting = True
        self._stop = False
        self._abort: str | None = None
        self._open = 0  # sequences submitted and not finished
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.generated_tokens = 0

    # ------------------------------------------------------------------ life cycle
    def start(self) -> "Engine":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="t3-engine", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop (running sequences are cancelled) and remove the hook."""
        with self._cv:
            self._accepting = False
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._hook.remove()

    def stop_accepting(self) -> None:
        with self._cv:
            self._accepting = False

    def abort(self) -> None:
        """Take no more sequences and fail every open one now (``error_code`` ``shutting_down``): their
        requests are answered at once instead of being cut off when the server exits."""
        with self._cv:
            self._accepting = False
            self._abort = STOPPED
            self._cv.notify_all()

    @property
    def busy(self) -> int:
        """Sequences submitted and not finished (running or waiting)."""
        return self._open

    def stats(self) -> dict:
        return {"running": len(self._seqs), "waiting": len(self._waiting), "max_batch": self.max_batch,
                "steps": self.steps, "generated_tokens": self.generated_tokens}

    def submit(self, seqs: list[Sequence]) -> None:
        """Queue sequences (all or none)."""
        for s in seqs:
            if s.sampling_temperature > 0:
                s.generator = torch.Generator(device="cpu")
                s.generator.manual_seed(s.seed if s.seed is not None else secrets.randbits(63))
        with self._cv:
            if not self._accepting:
                raise EngineStopped("the server is shutting down")
            if len(self._waiting) + len(seqs) > self.max_waiting:
                raise EngineFull(f"{len(self._waiting)} sequences are waiting already")
            self._waiting.extend(seqs)
            self._open += len(seqs)
            self._cv.notify_all()

    def cancel(self, seqs) -> None:
        """Drop sequences whose client went away; they leave the batch at the next step."""
        for s in seqs:
            s.cancelled = True
        with self._cv:
            self._cv.notify_all()

    # ------------------------------------------------------------------ the loop
    def _record(self, module, args, output):
        if self._capture_thread == threading.get_ident():
            self._captured.append(output)

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cv:
                    while not self._stop and not self._waiting and not self._seqs and self._abort is None:
                        self._cv.wait()
                    if self._stop:
                        break
                    if self._abort is not None:
                        self._fail_all(list(self._seqs) + list(self._waiting), self._abort, "shutting_down")
                        self._waiting.clear()
                        self._reset()
                        self._abort = None
                        continue
                    room = self.max_batch - len(self._seqs)
                    new = []
                    while self._waiting and len(new) < room:
                        s = self._waiting.popleft()
                        if s.cancelled:
                            self._finish(s, "cancelled")
                        else:
                            new.append(s)
                try:
                    self._drop_cancelled()
                    if new:
                        self._prefill(new)
                    if self._seqs:
                        self._decode()
                except Exception:  # noqa: BLE001 - one bad step must not take the server down
                    failed = self._seqs + new
                    log.exception("the batch's forward pass failed; failing its %d sequences (requests %s)", len(failed),
                                  ", ".join(sorted({str(s.request_id) for s in failed})))
                    self._fail_all(failed, FAILED, "generation_failed")
                    self._reset()
        self._fail_all(list(self._seqs) + list(self._waiting), STOPPED, "shutting_down")
        self._reset()
        self._waiting.clear()

    def _fail_all(self, seqs, message: str, code: str) -> None:
        for s in seqs:
            if s.finish_reason is None:
                s.cancelled = True
                s.error, s.error_code = message, code
                self._finish(s, "error")

    def _fail_row(self, s: Sequence, why: str) -> None:
        """Mark ``s`` failed (it finishes with ``error`` at its next :meth:`_advance`); the batch goes on."""
        if s.error is None:
            log.error("request %s: %s; this sequence fails, the rest of the batch goes on", s.request_id, why)
            s.error, s.error_code = FAILED, "generation_failed"

    def _reset(self) -> None:
        self._seqs, self._cache, self._mask, self._sum, self._count, self._last = [], None, None, None, None, None

    # ------------------------------------------------------------------ forward passes
    def _forward(self, ids, mask, positions, cache):
        self._captured.clear()
        self._capture_thread = threading.get_ident()
        try:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, **{cache_kwarg(): cache},
                             use_cache=True, logits_to_keep=1)
        finally:
            self._capture_thread = None
        if not self._captured:
            raise ModelError(f"the decoder of {type(self.model).__name__} did not run; its hidden states cannot be read.")
        dec = self._captured[-1]
        self._captured.clear()
        hidden = dec[0] if isinstance(dec, tuple) else dec.last_hidden_state
        return out.logits[:, -1], hidden

    def _prefill(self, seqs: list[Sequence]) -> None:
        from transformers import DynamicCache
        from transformers.cache_utils import Cache, DynamicLayer

        from t3unlearn.t3.features import pool_prefix

        width = max(len(s.prompt_ids) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            n = len(s.prompt_ids)
            ids[row, width - n:] = torch.tensor(s.prompt_ids, dtype=torch.long)
            mask[row, width - n:] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        cache = (DynamicCache(config=self._cache_config) if self._layers is None
                 else Cache(layers=[DynamicLayer() for _ in range(self._layers)]))
        logits, hidden = self._forward(ids, mask, positions, cache)
        pooled, run_sum, run_count = pool_prefix(hidden, mask)
        tokens = self._next_tokens(seqs, logits, pooled[:, -1])
        keep = [row for row, s in enumerate(seqs) if not self._advance(s, tokens[row])]
        if not keep:
            return
        if len(keep) < len(seqs):
            index = torch.tensor(keep, device=self.device)
            cache.batch_select_indices(index)
            mask, run_sum, run_count = mask[index], run_sum[index], run_count[index]
            tokens = [tokens[r] for r in keep]
        self._join([seqs[r] for r in keep], cache, mask, run_sum, run_count, torch.tensor(tokens, dtype=torch.long, device=self.device))

    def _join(self, seqs, cache, mask, run_sum, run_count, last) -> None:
        """Merge a prefilled group into the running batch (the shorter caches padded on the left)."""
        if not self._seqs:
            self._seqs, self._cache, self._mask, self._sum, self._count, self._last = list(seqs), cache, mask, run_sum, run_count, last
            self._trim()
            return
        width = max(self._mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self._cache.layers, cache.layers):
            mine.keys = torch.cat([_pad_left(mine.keys, width, 2), _pad_left(theirs.keys, width, 2)])
            mine.values = torch.cat([_pad_left(mine.values, width, 2), _pad_left(theirs.values, width, 2)])
        self._mask = torch.cat([_pad_left(self._mask, width, 1), _pad_left(mask, width, 1)])
        self._sum = torch.cat([self._sum, run_sum])
        self._count = torch.cat([self._count, run_count])
        self._last = torch.cat([self._last, last])
        self._seqs.extend(seqs)

    def _decode(self) -> None:
        ids = self._last.unsqueeze(-1)
        mask = torch.cat([self._mask, self._mask.new_ones((self._mask.shape[0], 1))], dim=1)
        positions = (mask.sum(-1, keepdim=True) - 1)
        logits, hidden = self._forward(ids, mask, positions, self._cache)
        # the running mean, updated as T3ForCausalLM does at a decoding step
        h = hidden[:, 0].float()
        m = mask[:, -1].to(device=h.device, dtype=h.dtype)
        self._sum, self._count = torch.addcmul(self._sum, h, m.unsqueeze(-1)), self._count + m
        self._mask = mask
        pooled = self._sum / self._count.clamp_min(1.0).unsqueeze(-1)
        tokens = self._next_tokens(self._seqs, logits, pooled)
        self._last = torch.tensor(tokens, dtype=torch.long, device=self.device)
        done = [self._advance(s, t) for s, t in zip(self._seqs, tokens)]
        if any(done):
            self._remove([row for row, d in enumerate(done) if not d])
        self.steps += 1

    def _drop_cancelled(self) -> None:
        if any(s.cancelled for s in self._seqs):
            for s in self._seqs:
                if s.cancelled and s.finish_reason is None:
                    self._finish(s, "cancelled")
            self._remove([row for row, s in enumerate(self._seqs) if not s.cancelled])

    def _remove(self, keep: list[int]) -> None:
        if not keep:
            self._reset()
            return
        index = torch.tensor(keep, device=self.device)
        self._cache.batch_select_indices(index)
        self._mask, self._sum, self._count, self._last = self._mask[index], self._sum[index], self._count[index], self._last[index]
        self._seqs = [self._seqs[r] for r in keep]
        self._trim()

    def _trim(self) -> None:
        """Drop leading columns that are padding in every row."""
        lead = int((self._mask.cumsum(-1) == 0).sum(-1).min())
        if lead > 0:
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[:, :, lead:], layer.values[:, :, lead:]
            self._mask = self._mask[:, lead:]

    # ------------------------------------------------------------------ guided logits and sampling
    def guided_logits(self, seqs: list[Sequence], base_logits: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """``(B, V)`` guided logits: per row its head and guidance (the base's log-probs for base rows).

        One head product per head present in the batch, over that head's rows only; then, per group of rows
        with the same guidance, :func:`t3unlearn.t3.guidance.guided_logits`, the function
        :class:`t3unlearn.T3ForCausalLM` uses. A head or a guidance group that raises fails its own rows
        (:meth:`_fail_row`; they keep the base's log-probs for this step) and no other."""
        out = torch.log_softmax(base_logits.float(), dim=-1)
        by_head: dict[int, list[int]] = {}
        for row, s in enumerate(seqs):
            if s.head is not None:
                by_head.setdefault(id(s.head), []).append(row)
        for rows in by_head.values():
            try:
                self._guide_rows(seqs, rows, out, base_logits, pooled)
            except Exception as exc:  # noqa: BLE001 - a head that fails fails its own rows only
                log.exception("head %s failed", getattr(seqs[rows[0]].head, "name", "?"))
                for r in rows:
                    self._fail_row(seqs[r], f"its head failed ({type(exc).__name__})")
        return out

    def _guide_rows(self, seqs, rows: list[int], out: torch.Tensor, base_logits: torch.Tensor, pooled: torch.Tensor) -> None:
        """Write the guided logits of one head's ``rows`` into ``out``, one guidance group at a time."""
        from t3unlearn.t3.guidance import guided_logits

        head = seqs[rows[0]].head
        groups: dict[object, list[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault(seqs[r].guidance or head.guidance, []).append(i)
        if not any(g.temperature != 1.0 or g.scale != 0.0 for g in groups):  # T = 1, s = 0: the base itself
            return
        index = torch.tensor(rows, device=out.device)
        head_pooled = pooled.index_select(0, index)
        head_logits = head.logits(head_pooled)
        for g, local in groups.items():
            whole = len(local) == len(rows)
            sel = index if whole else index[local]
            hl = head_logits if whole else head_logits[local]
            hp = head_pooled if whole else head_pooled[local]
            try:
                seen = None if g.copy_floor is None else _seen_rows([seqs[rows[i]] for i in local], hl.shape[-1], hl.device)
                guided = guided_logits(base_logits.index_select(0, sel), hl, g, weight=head.support_weight(hp, g.support),
                                       seen=seen, pieces=head.pieces if g.reads_pieces else None)
            except Exception as exc:  # noqa: BLE001 - one guidance fails its own rows only
                log.exception("guidance %s of head %s failed", g, head.name)
                for i in local:
                    self._fail_row(seqs[rows[i]], f"its guidance failed ({type(exc).__name__})")
                continue
            out.index_copy_(0, sel, guided)

    def _next_tokens(self, seqs: list[Sequence], base_logits: torch.Tensor, pooled: torch.Tensor) -> list[int]:
        scores = self.guided_logits(seqs, base_logits, pooled)
        bad = ~torch.isfinite(scores.amax(-1))  # a nan or +inf anywhere in the row, or nothing but -inf
        if bool(bad.any()):
            for row in bad.nonzero()[:, 0].tolist():
                self._fail_row(seqs[row], "its guided scores are not finite (inf or nan)")
            scores = scores.masked_fill(bad.unsqueeze(-1), 0.0)  # the failed rows end at this step; the rest go on
        tokens = scores.argmax(-1).tolist()  # greedy rows
        self._sample(seqs, scores, tokens)
        self._record_logprobs(seqs, scores, tokens)
        return tokens

    def _sample(self, seqs: list[Sequence], scores: torch.Tensor, tokens: list[int]) -> None:
        """Replace ``tokens`` of sampled rows (temperature > 0) by a draw from their tempered, top-p distribution."""
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        sampled: dict[tuple, list[int]] = {}
        for row, s in enumerate(seqs):
            if s.sampling_temperature > 0 and s.error is None:
                sampled.setdefault((s.sampling_temperature, s.top_p), []).append(row)
        for (temp, top_p), rows in sampled.items():
            try:
                sub = scores.index_select(0, torch.tensor(rows, device=scores.device))
                if temp != 1.0:
                    sub = TemperatureLogitsWarper(temp)(None, sub)
                if top_p < 1.0:
                    sub = TopPLogitsWarper(top_p)(None, sub)
                probs = torch.softmax(sub, dim=-1).cpu()
            except Exception as exc:  # noqa: BLE001 - one group's sampling settings fail those rows only
                for row in rows:
                    self._fail_row(seqs[row], f"sampling failed ({type(exc).__name__})")
                continue
            ok = (torch.isfinite(probs).all(-1) & (probs.sum(-1) > 0)).tolist()
            for i, row in enumerate(rows):
                if not ok[i]:
                    self._fail_row(seqs[row], f"its sampling probabilities are not finite (temperature {temp:g}, top_p {top_p:g})")
                    continue
                tokens[row] = int(torch.multinomial(probs[i], 1, generator=seqs[row].generator))

    def _record_logprobs(self, seqs: list[Sequence], scores: torch.Tensor, tokens: list[int]) -> None:
        want = [row for row, s in enumerate(seqs) if s.logprobs is not None and s.error is None]
        if not want:
            return
        index = torch.tensor(want, device=scores.device)
        logp = torch.log_softmax(scores.index_select(0, index), dim=-1)
        k = min(max(seqs[r].logprobs for r in want), logp.shape[-1])
        top_v, top_i = logp.topk(k, dim=-1) if k > 0 else (None, None)
        chosen = logp.gather(-1, torch.tensor([[tokens[r]] for r in want], device=scores.device))[:, 0].tolist()
        for i, row in enumerate(want):
            s = seqs[row]
            top = []
            if s.logprobs:
                top = [(self._token_text(t), float(v)) for t, v in zip(top_i[i, : s.logprobs].tolist(), top_v[i, : s.logprobs].tolist())]
            s.pending.append(TokenInfo(tokens[row], self._token_text(tokens[row]), float(chosen[i]), top,
                                       len(s.text.rstrip("\ufffd"))))

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    # ------------------------------------------------------------------ text, stop strings, events
    def _advance(self, s: Sequence, token: int) -> bool:
        """Record ``token`` for ``s``; emit what became final; True when ``s`` finished (a failed row ends here)."""
        if s.error is not None:
            self._finish(s, "error")
            return True
        self.generated_tokens += 1
        if not s.out_ids:
            s.first_token_at = time.perf_counter()
        s.out_ids.append(token)
        reason = None
        if s.cancelled:
            reason = "cancelled"
        elif token in self.eos_ids and not s.ignore_eos:
            reason = "stop"
            if s.pending and s.pending[-1].token_id == token:
                s.pending.pop()  # logprobs cover the text returned; the EOS ends it, it is not in it
        else:
            ids = [t for t in s.out_ids if t not in self.eos_ids] if s.ignore_eos else s.out_ids
            s.text = self.tokenizer.decode(ids, skip_special_tokens=True)
            if s.stop:
                start = max(0, s.sent - max(map(len, s.stop)))
                hits = [i for i in (s.text.find(x, start) for x in s.stop) if i >= 0]
                if hits:
                    s.text = s.text[: min(hits)]
                    s.pending = [t for t in s.pending if t.start < len(s.text)]  # logprobs cover the text returned
                    reason = "stop"
            if reason is None and (len(s.out_ids) >= s.max_tokens or len(s.prompt_ids) + len(s.out_ids) >= self.context):
                reason = "length"
        if reason is not None:
            self._finish(s, reason)
            return True
        if s.stream:
            safe = len(s.text)
            while safe > s.sent and s.text[safe - 1] == "\ufffd":  # an incomplete multi-byte character
                safe -= 1
            hold = 0
            for x in s.stop:  # hold back a tail that may still become a stop string
                for k in range(min(len(x) - 1, safe - s.sent), hold, -1):
                    if s.text.endswith(x[:k], 0, safe):
                        hold = k
                        break
            safe -= hold
            ready = sum(t.start < safe for t in s.pending)  # tokens whose text is (being) sent; the rest wait with it
            if safe > s.sent or ready:
                delta, s.sent = s.text[s.sent: safe], max(s.sent, safe)
                pending, s.pending = s.pending[:ready], s.pending[ready:]
                if s.emit is not None:
                    try:
                        s.emit(s, delta, pending, None)
                    except Exception:  # noqa: BLE001 - a closed event loop must not stop the engine
                        s.cancelled = True
        return False

    def _finish(self, s: Sequence, reason: str) -> None:
        if s.finish_reason is not None:
            return
        s.finish_reason = reason
        with self._cv:
            self._open -= 1
        delta, s.sent = s.text[s.sent:], len(s.text)
        pending, s.pending = s.pending, []
        if s.emit is not None:
            try:
                s.emit(s, delta, pending, reason)
            except Exception as exc:  # noqa: BLE001 - a closed event loop must not stop the engine
                log.debug("request %s: could not deliver the end of a sequence (%s)", s.request_id, exc)


def wait_idle(engine: Engine, timeout: float = 10.0) -> bool:
    """Wait until no sequence is running or waiting (tests, shutdown)."""
    end = time.monotonic() + timeout
    while engine.busy and time.monotonic() < end:
        time.sleep(0.01)
    return not engine.busy
