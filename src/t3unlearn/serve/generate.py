"""The generation endpoints, ``POST /v1/completions`` and ``POST /v1/chat/completions``.

A request is validated (:mod:`t3unlearn.serve.schemas`), tokenized in a worker thread (a long prompt
costs its own request, not the event loop's other clients), turned into :class:`Sequence` objects and
queued in the engine; its tokens come back through an asyncio queue. Each request has a deadline
(``--request-timeout``); a full queue answers 429; a sequence that fails fails its request only, with a
message that carries the request id and no internals.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from t3unlearn.errors import ModelError
from t3unlearn.serve.engine import EngineFull, EngineStopped, Sequence
from t3unlearn.serve.errors import APIError, error_body
from t3unlearn.serve.heads import guidance_dict
from t3unlearn.serve.middleware import REQUEST_ID
from t3unlearn.serve.schemas import MAX_PROMPTS, ChatRequest, CompletionRequest, _Sampling, chat_prompt_ids

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _now() -> int:
    return int(time.time())


INLINE_CHARS = 4096  # prompts up to this many characters tokenize in well under a millisecond: on the loop
TEMPLATE_CHARS = 64  # about what a chat template adds per message (roles, separators, "Question: ")


def _text_size(prompt) -> int:
    if isinstance(prompt, str):
        return len(prompt)
    return sum(len(x) for x in prompt if isinstance(x, str)) if prompt else 0


async def _off_loop(size: int, fn, *args):
    """``fn(*args)`` (tokenizing), in a worker thread when the text is long: a long prompt then costs its own
    request only, while the event loop answers everyone else; a short one skips the thread hop."""
    if size <= INLINE_CHARS:
        return fn(*args)
    return await run_in_threadpool(fn, *args)


def sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def answer_text(text: str) -> str:
    """A chat answer without its first character when that is a space: the models answer "Answer:" with
    " Tove ..." (training puts the answer after a space), which a chat message does not show. Completions keep
    the raw continuation. Logprobs keep the tokens as generated."""
    return text[1:] if text.startswith(" ") else text


def completion_logprobs(tokens, offset: int = 0) -> dict:
    offsets, pos = [], offset
    for t in tokens:
        offsets.append(pos)
        pos += len(t.text)
    return {"tokens": [t.text for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [dict(t.top) for t in tokens], "text_offset": offsets}


def chat_logprobs(tokens) -> dict:
    def item(text, lp):
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

    return {"content": [{**item(t.text, t.logprob), "top_logprobs": [item(a, b) for a, b in t.top]} for t in tokens]}


def usage(prompts, seqs) -> dict:
    prompt_tokens = sum(len(p) for p in prompts)
    completion_tokens = sum(len(s.out_ids) for s in seqs)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


class _Job:
    """One request's sequences, their event queue, its deadline and what the metrics need."""

    def __init__(self, request: Request, model: str, head, prompts, seqs, queue, deadline: float | None):
        self.request, self.model, self.head, self.prompts, self.seqs, self.queue = request, model, head, prompts, seqs, queue
        self.deadline, self.rid = deadline, REQUEST_ID.get()

    def remaining(self) -> float:
        """Seconds left before the deadline (inf without one)."""
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()


class Generation:
    """The two generation endpoints over a :class:`~t3unlearn.serve.app.ServeState`."""

    def __init__(self, state):
        self.state, self.engine, self.tok = state, state.engine, state.tokenizer

    # ------------------------------------------------------------------ building a job
    def knobs(self, req: _Sampling, head):
        """The guidance of a request: the head's saved one, with the request's ``t3`` changes (None for the base)."""
        if req.t3 is not None and self.state.security.lock_guidance:
            raise APIError(403, "this server serves each head with its saved guidance (--lock-guidance); remove 't3' "
                           "from the request.", param="t3", code="guidance_locked")
        changes = req.t3.changes() if req.t3 is not None else {}
        if head is None:
            if req.t3 is not None:  # even an empty one: the base has no guidance to set
                raise APIError(400, f"'t3' sets a head's guidance (T, s, ...), but '{req.model}' is the base model; "
                               "pick a head as 'model'.", param="t3")
            return None
        try:
            guidance = head.guidance.replace(**changes)
        except ModelError as exc:
            raise APIError(400, str(exc), param="t3") from None
        if guidance.support is not None and head.support is None:
            from t3unlearn.t3.head import NO_SUPPORT

            raise APIError(400, NO_SUPPORT, param="t3.support")
        if guidance.reads_pieces and head.pieces is None:
            from t3unlearn.t3.head import NO_PIECES

            raise APIError(400, NO_PIECES, param="t3.piece_floor" if guidance.piece_floor is not None else "t3.spelling")
        return guidance

    def max_tokens_for(self, prompts: list[list[int]], default: int | None, field: str, requested: int | None,
                       prompt_param: str = "prompt") -> int:
        context = self.engine.context
        longest = max(len(p) for p in prompts)
        room = context - longest
        if room < 1:
            raise APIError(400, f"the prompt is {longest} tokens; this model's context is {context} tokens, "
                           "which leaves no room to generate. Shorten the prompt.", param=prompt_param,
                           code="context_length_exceeded")
        if requested is None:
            return room if default is None else min(default, room)
        if requested > room:
            raise APIError(400, f"{field}={requested} is over the context: the prompt is {longest} tokens and the context "
                           f"{context}, so at most {room} new tokens fit.", param=field, code="context_length_exceeded")
        return requested

    def encode_prompts(self, prompt) -> list[list[int]]:
        """Token ids of a completions ``prompt`` (runs in a worker thread)."""
        if isinstance(prompt, str):
            items: list = [prompt]
        elif prompt and all(isinstance(x, int) for x in prompt):
            items = [list(prompt)]
        else:
            items = list(prompt)
        if not items:
            raise APIError(400, "'prompt' is empty; give a string, a list of strings or of token ids.", param="prompt")
        if len(items) > MAX_PROMPTS:
            raise APIError(400, f"{len(items)} prompts in one request; at most {MAX_PROMPTS}.", param="prompt")
        out, vocab = [], self.engine.vocab_size
        for x in items:
            ids = list(self.tok(x, add_special_tokens=True)["input_ids"]) if isinstance(x, str) else list(x)
            if not ids:
                raise APIError(400, "a prompt is empty (no tokens); give some text.", param="prompt")
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise APIError(400, f"token id {bad[0]} is outside this model's vocabulary (0..{vocab - 1}).", param="prompt")
            out.append(ids)
        return out

    def start(self, req: _Sampling, request: Request, head, prompts, max_tokens: int, logprobs: int | None) -> _Job:
        """Check limits, build the sequences and queue them in the engine."""
        st = self.state
        if req.n > st.max_n:
            raise APIError(400, f"n={req.n} is over this server's limit of {st.max_n} choices per request.", param="n")
        if len(prompts) * req.n > st.max_n * 4:
            raise APIError(400, f"{len(prompts)} prompts x n={req.n} is over {st.max_n * 4} sequences per request.", param="n")
        if len(prompts) * req.n > self.engine.max_waiting:  # it could never be queued: 429 would ask to retry forever
            raise APIError(400, f"{len(prompts)} prompt(s) x n={req.n} is {len(prompts) * req.n} sequences, more than this "
                           f"server queues at once ({self.engine.max_waiting}, --max-queue); ask for fewer.", param="n")
        guidance = self.knobs(req, head)
        temp = 1.0 if req.temperature is None else float(req.temperature)
        top_p = 1.0 if req.top_p is None else float(req.top_p)
        stop = tuple([req.stop] if isinstance(req.stop, str) else (req.stop or []))
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()

        def emit(seq, delta, tokens, reason):
            if not loop.is_closed():  # the server may have stopped; the engine then drops the event
                loop.call_soon_threadsafe(queue.put_nowait, (seq, delta, tokens, reason))

        rid, seqs = REQUEST_ID.get(), []
        for p in prompts:
            for _ in range(req.n):
                seed = None if req.seed is None else (req.seed + len(seqs)) % (1 << 63)
                seqs.append(Sequence(p, head, guidance, max_tokens=max_tokens, sampling_temperature=temp, top_p=top_p,
                                     stop=stop, ignore_eos=req.ignore_eos, logprobs=logprobs, seed=seed, stream=req.stream,
                                     emit=emit, request_id=rid))
        try:
            self.engine.submit(seqs)
        except EngineStopped:
            raise APIError(503, "the server is shutting down; retry on another replica.", code="shutting_down") from None
        except EngineFull:
            raise APIError(429, f"the server's queue is full ({self.engine.max_waiting} sequences waiting, --max-queue); "
                           "retry in a moment.", code="queue_full", headers={"Retry-After": "1"}) from None
        st.metrics.prompt_tokens.labels(req.model).inc(sum(len(p) for p in prompts) * req.n)
        timeout = st.request_timeout
        return _Job(request, req.model, head, prompts, seqs, queue, None if not timeout else time.monotonic() + timeout)

    # ------------------------------------------------------------------ finishing a job
    def _timeout_error(self, job: _Job) -> APIError:
        return APIError(504, f"the request took longer than this server's limit of {self.state.request_timeout:g} s "
                        "(--request-timeout); ask for fewer tokens, or retry when the server is less busy.", code="timeout")

    def _failure(self, job: _Job) -> APIError | None:
        failed = [s for s in job.seqs if s.finish_reason == "error"]
        if not failed:
            return None
        code = failed[0].error_code or "generation_failed"
        for s in failed:
            self.state.metrics.failures.labels(s.error_code or "generation_failed").inc()
        return APIError(503 if code == "shutting_down" else 500, f"{failed[0].error} (request id {job.rid})", code=code)

    def _done(self, job: _Job) -> None:
        """Cancel what is left, and count the job's tokens and its time to first token."""
        self.engine.cancel([s for s in job.seqs if s.finish_reason is None])
        m = self.state.metrics
        m.generation_tokens.labels(job.model).inc(sum(len(s.out_ids) for s in job.seqs))
        firsts = [s.first_token_at for s in job.seqs if s.first_token_at is not None]
        t0 = job.request.scope.get("state", {}).get("t0")
        if firsts and t0 is not None:
            m.ttft.labels(job.model).observe(max(0.0, min(firsts) - t0))

    async def collect(self, job: _Job) -> dict[int, list]:
        """Wait for every sequence to finish (cancelling them if the client goes away or the deadline passes)."""
        infos: dict[int, list] = {id(s): [] for s in job.seqs}
        left = len(job.seqs)
        try:
            while left:
                wait = min(1.0, job.remaining())
                if wait <= 0:
                    raise self._timeout_error(job)
                try:
                    seq, _delta, tokens, reason = await asyncio.wait_for(job.queue.get(), timeout=wait)
                except asyncio.TimeoutError:
                    if await job.request.is_disconnected():
                        raise APIError(499, "client closed the request") from None
                    continue
                infos[id(seq)].extend(tokens)
                if reason is not None:
                    left -= 1
        finally:
            self._done(job)
        failure = self._failure(job)
        if failure is not None:
            raise failure
        return infos

    async def stream_events(self, job: _Job, make_chunk, include_usage: bool, first_chunks=()):
        index = {id(s): i for i, s in enumerate(job.seqs)}
        left = len(job.seqs)
        try:
            for chunk in first_chunks:
                yield sse(chunk)
            while left:
                try:
                    seq, delta, tokens, reason = await asyncio.wait_for(job.queue.get(), timeout=None if job.deadline is None else max(0.0, job.remaining()))
                except asyncio.TimeoutError:
                    self.engine.cancel([s for s in job.seqs if s.finish_reason is None])  # before the client hears of it
                    e = self._timeout_error(job)
                    yield sse(error_body(e.message, type=e.type, code=e.code))
                    break
                if reason == "error":
                    e = self._failure(job)
                    yield sse(error_body(e.message, type=e.type, code=e.code))
                    break
                if reason is not None:
                    left -= 1
                if delta or tokens or reason is not None:
                    yield sse(make_chunk(index[id(seq)], delta, tokens, None if reason == "cancelled" else reason))
            if include_usage and not left:
                yield sse(make_chunk(None, None, None, None, usage=usage(job.prompts, job.seqs)))
            yield "data: [DONE]\n\n"
        finally:
            self._done(job)

    @staticmethod
    def t3_info(head, seqs) -> dict | None:
        return None if head is None else {"head": head.name, **guidance_dict(seqs[0].guidance)}

    # ------------------------------------------------------------------ the endpoints
    async def completions(self, req: CompletionRequest, request: Request):
        head = self.state.resolve(req.model, request)
        prompts = await _off_loop(_text_size(req.prompt), self.encode_prompts, req.prompt)
        max_tokens = self.max_tokens_for(prompts, 16, "max_tokens", req.max_tokens)
        job = self.start(req, request, head, prompts, max_tokens, req.logprobs)
        rid, created = f"cmpl-{uuid.uuid4().hex}", _now()
        if req.stream:
            offsets = {}

            def chunk(i, delta, tokens, reason, usage=None):
                body = {"id": rid, "object": "text_completion", "created": created, "model": req.model, "choices": []}
                if usage is not None:
                    body["usage"] = usage
                    return body
                lp = None
                if req.logprobs is not None:
                    lp = completion_logprobs(tokens, offsets.get(i, 0))
                    offsets[i] = offsets.get(i, 0) + sum(len(t.text) for t in tokens)
                body["choices"] = [{"index": i, "text": delta, "logprobs": lp, "finish_reason": reason}]
                return body

            include = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(self.stream_events(job, chunk, include), media_type="text/event-stream", headers=_SSE_HEADERS)
        infos = await self.collect(job)
        seqs = job.seqs
        choices = [{"index": i, "text": s.text, "finish_reason": s.finish_reason,
                    "logprobs": completion_logprobs(infos[id(s)]) if req.logprobs is not None else None} for i, s in enumerate(seqs)]
        return {"id": rid, "object": "text_completion", "created": created, "model": req.model, "system_fingerprint": None,
                "choices": choices, "usage": usage(prompts, seqs), "t3": self.t3_info(head, seqs)}

    async def chat(self, req: ChatRequest, request: Request):
        head = self.state.resolve(req.model, request)
        if req.top_logprobs is not None and not req.logprobs:
            raise APIError(400, "'top_logprobs' needs 'logprobs': true.", param="top_logprobs")
        if req.max_tokens is not None and req.max_completion_tokens is not None and req.max_tokens != req.max_completion_tokens:
            raise APIError(400, "give 'max_completion_tokens' or 'max_tokens', not two different values.", param="max_tokens")
        # the template's own text counts too: 30,000 empty messages render to 360 KB of 'Question: ' lines
        size = sum(len(m.text()) + TEMPLATE_CHARS for m in req.messages)
        prompts = [await _off_loop(size, chat_prompt_ids, self.tok, self.state.formatter, req.messages)]
        requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        field = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        max_tokens = self.max_tokens_for(prompts, None, field, requested, prompt_param="messages")
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        job = self.start(req, request, head, prompts, max_tokens, logprobs)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", _now()
        if req.stream:
            started = set()  # the choices whose text has begun: their first text lost its leading space

            def chunk(i, delta, tokens, reason, usage=None):
                body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": req.model, "choices": []}
                if usage is not None:
                    body["usage"] = usage
                    return body
                if delta and i not in started:
                    started.add(i)
                    delta = answer_text(delta)
                d = {"content": delta} if delta or reason is None else {}
                lp = chat_logprobs(tokens) if logprobs is not None and tokens else None
                body["choices"] = [{"index": i, "delta": d, "logprobs": lp, "finish_reason": reason}]
                return body

            first = [{"id": rid, "object": "chat.completion.chunk", "created": created, "model": req.model,
                      "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]}
                     for i in range(len(job.seqs))]
            include = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(self.stream_events(job, chunk, include, first), media_type="text/event-stream",
                                     headers=_SSE_HEADERS)
        infos = await self.collect(job)
        seqs = job.seqs
        choices = [{"index": i, "message": {"role": "assistant", "content": answer_text(s.text)}, "finish_reason": s.finish_reason,
                    "logprobs": chat_logprobs(infos[id(s)]) if logprobs is not None else None} for i, s in enumerate(seqs)]
        return {"id": rid, "object": "chat.completion", "created": created, "model": req.model, "system_fingerprint": None,
                "choices": choices, "usage": usage(prompts, seqs), "t3": self.t3_info(head, seqs)}
