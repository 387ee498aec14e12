"""The serving engine in process: continuous batching over many heads, stop strings, seeds, cancelling,
and the head registry. Untrained models (random_lm) with heads that visibly tilt; reference = T3ForCausalLM."""

from __future__ import annotations

import copy
import threading
import time

import pytest
import torch

from t3unlearn.serve.engine import Engine, Sequence, wait_idle
from t3unlearn.serve.heads import HeadError, HeadRegistry
from t3unlearn.t3.head import GuidanceHead
from t3unlearn.t3.model import T3Config, T3ForCausalLM, tokenizer_hash

PROMPTS = ["Question: Where was Ilse Varga born?\nAnswer:", "Question: What is the capital of France?\nAnswer:", "Hi",
           "I don't know. That is not", "Question: What genre does Tomas Reed write?\nAnswer: Tomas"]


@pytest.fixture(scope="module")
def setup(random_lm, tmp_path_factory):
    """(base, tokenizer, registry with heads h1 (T=2.5, s=1) and h2 (T=1.5, s=2), reference T3 models)."""
    base, tok = random_lm
    d, vocab = base.config.hidden_size, base.config.vocab_size
    root = tmp_path_factory.mktemp("serve-heads")
    refs = {}
    for name, seed, T, s in (("h1", 1, 2.5, 1.0), ("h2", 2, 1.5, 2.0)):
        torch.manual_seed(seed)
        head = GuidanceHead(d, 8, vocab)
        torch.nn.init.normal_(head.out.weight, std=2.0)
        cfg = T3Config(t3_temperature=T, t3_scale=s, tokenizer_hash=tokenizer_hash(tok))
        # the reference gets its own copy of the base: its forward hook must not see the engine's passes
        ref = T3ForCausalLM(cfg, copy.deepcopy(base), head).eval()
        ref.save_pretrained(root / name)
        refs[name] = ref
    registry = HeadRegistry("base", hidden_size=d, vocab_size=vocab, tokenizer_hash=tokenizer_hash(tok))
    for name in refs:
        registry.add(name, str(root / name))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield base, tok, registry, refs, root
    torch.set_num_threads(n)


class Collector:
    def __init__(self):
        self.deltas, self.tokens, self.finished, self.lock = {}, {}, {}, threading.Lock()

    def __call__(self, seq, delta, tokens, reason):
        with self.lock:
            self.deltas.setdefault(id(seq), []).append(delta)
            self.tokens.setdefault(id(seq), []).extend(tokens)
            if reason is not None:
                self.finished[id(seq)] = reason


def _seq(tok, prompt, head=None, T=None, s=None, **kw):
    guidance = head.guidance.replace(temperature=T, scale=s) if head is not None else None
    kw.setdefault("sampling_temperature", 0.0)
    return Sequence(list(tok(prompt)["input_ids"]), head, guidance, **kw)


@torch.no_grad()
def _reference(model, tok, prompt, n, T=None, s=None, logprobs=False):
    """What ``generate`` gives for ``prompt`` alone (greedy, ``n`` new tokens), at T and s if given;
    with ``logprobs``, also the log-prob of each token under the model."""
    saved = (model.temperature, model.scale) if T is not None else None
    if saved:
        model.temperature, model.scale = T, s
    try:
        ids = torch.tensor([tok(prompt)["input_ids"]])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    finally:
        if saved:
            model.temperature, model.scale = saved
    new = out.sequences[0, ids.shape[1]:].tolist()
    if not logprobs:
        return new
    return new, [float(torch.log_softmax(sc[0].float(), -1)[t]) for sc, t in zip(out.scores, new)]


def _until(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.001)


def test_mixed_heads_share_one_forward_and_equal_generate(setup):
    base, tok, registry, refs, _ = setup
    h1, h2 = registry.resolve("h1"), registry.resolve("h2")
    calls = []
    hook = base.register_forward_hook(lambda m, a, o: calls.append(1))
    engine = Engine(base, tok, max_batch=64).start()
    try:
        got = Collector()
        # base rows, two heads, and a head with per-request T and s, all in one batch
        plan = [(p, h, T, s) for p in PROMPTS for h, T, s in ((None, None, None), (h1, None, None), (h2, None, None), (h1, 1.0, 3.0))]
        seqs = [_seq(tok, p, h, T, s, max_tokens=8, ignore_eos=True, emit=got) for p, h, T, s in plan]
        engine.submit(seqs)
        assert wait_idle(engine, 30)
    finally:
        engine.close()
        hook.remove()
    # one prefill of the whole batch, then one base forward per step for every row, whatever its head
    assert len(calls) == 1 + 7 and engine.steps == 7
    for (p, h, T, s), seq in zip(plan, seqs):
        ref = base if h is None else refs[h.name]
        want = _reference(ref, tok, p, 8, T, s) if h is not None and T is not None else _reference(ref, tok, p, 8)
        assert seq.out_ids == want, (p, h and h.name, T, s)
        assert got.finished[id(seq)] == "length"
    # the tilt is real: the heads change what is generated
    assert {tuple(s.out_ids) for s in seqs[0:4]} != {tuple(seqs[0].out_ids)}


def test_sequences_join_and_leave_a_running_batch(setup):
    base, tok, registry, refs, _ = setup
    h1 = registry.resolve("h1")
    engine = Engine(base, tok, max_batch=3).start()  # smaller than the work: sequences wait, join and leave
    try:
        got = Collector()
        seqs = [_seq(tok, p, h1 if i % 2 else None, max_tokens=3 + 2 * i, emit=got, logprobs=0, ignore_eos=True)
                for i, p in enumerate(PROMPTS * 2)]
        engine.submit(seqs[:4])
        engine.submit(seqs[4:])
        assert wait_idle(engine, 30)
    finally:
        engine.close()
    for i, (p, seq) in enumerate(zip(PROMPTS * 2, seqs)):
        want, want_lp = _reference(refs["h1"] if i % 2 else base, tok, p, 3 + 2 * i, logprobs=True)
        assert seq.out_ids == want
        # the same distribution at every step, whatever the batch (padding, rows joining and leaving)
        torch.testing.assert_close([t.logprob for t in got.tokens[id(seq)]], want_lp, atol=1e-4, rtol=0)
        assert "".join(got.deltas[id(seq)]) == seq.text == tok.decode(seq.out_ids, skip_special_tokens=True)


def test_stop_strings_seeds_and_cancel(setup):
    base, tok, registry, _, _ = setup
    h2 = registry.resolve("h2")
    engine = Engine(base, tok, max_batch=8).start()
    try:
        got = Collector()
        free = _seq(tok, PROMPTS[0], h2, max_tokens=24, ignore_eos=True, stream=True, emit=got)
        engine.submit([free])
        assert wait_idle(engine)
        text = free.text
        stop = text[len(text) // 2: len(text) // 2 + 3]
        first = text.find(stop)
        stopped = _seq(tok, PROMPTS[0], h2, max_tokens=24, ignore_eos=True, stream=True, stop=(stop, "never-there"), emit=got)
        sampled = [_seq(tok, PROMPTS[1], h2, max_tokens=12, sampling_temperature=1.0, top_p=0.9, seed=seed, emit=got)
                   for seed in (7, 7, 8)]
        engine.submit([stopped] + sampled)
        assert wait_idle(engine)
        assert stopped.text == text[:first] and got.finished[id(stopped)] == "stop"
        assert "".join(got.deltas[id(stopped)]) == text[:first]  # no streamed piece ever showed the stop string
        assert sampled[0].out_ids == sampled[1].out_ids != sampled[2].out_ids

        long = _seq(tok, PROMPTS[2], None, max_tokens=200, ignore_eos=True, emit=got)
        short = _seq(tok, PROMPTS[3], None, max_tokens=30, ignore_eos=True, emit=got)
        engine.submit([long, short])
        _until(lambda: len(long.out_ids) >= 3)
        engine.cancel([long])
        assert wait_idle(engine)
        assert got.finished[id(long)] == "cancelled" and len(long.out_ids) < 200
        assert got.finished[id(short)] == "length" and len(short.out_ids) == 30
    finally:
        engine.close()


def test_registry_refuses_bad_heads_and_keeps_serving(setup, tmp_path, random_lm):
    base, tok, registry, refs, root = setup
    d, vocab = base.config.hidden_size, base.config.vocab_size
    with pytest.raises(HeadError, match="not a directory") as e:
        registry.add("x", str(tmp_path / "missing"))
    assert e.value.status == 400 and e.value.param == "path"
    # corrupt weights
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "t3_config.json").write_text((root / "h1" / "t3_config.json").read_text())
    (bad / "head.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(HeadError, match="corrupt"):
        registry.add("x", str(bad))
    # another base's shape: a head trained on a wider model
    from transformers import LlamaConfig, LlamaForCausalLM

    wide = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=2 * d, intermediate_size=8, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2))
    T3ForCausalLM(T3Config(), wide, GuidanceHead(2 * d, 4, vocab)).save_pretrained(tmp_path / "wide")
    with pytest.raises(HeadError, match="hidden size"):
        registry.add("x", str(tmp_path / "wide"))
    # guidance that does not validate
    with pytest.raises(HeadError, match="tempering") as e:
        registry.add("x", str(root / "h1"), tempering="sideways")
    assert e.value.param == "tempering"
    # another tokenizer
    strange = HeadRegistry("base", hidden_size=d, vocab_size=vocab, tokenizer_hash="0" * 16)
    with pytest.raises(HeadError, match="tokenizer"):
        strange.add("x", str(root / "h1"))
    # another base recorded (refused unless forced)
    named = HeadRegistry("base", hidden_size=d, vocab_size=vocab, base_path=str(tmp_path))
    cfg = (root / "h1" / "t3_config.json").read_text().replace('"base_model_name_or_path": null', f'"base_model_name_or_path": "{root}"')
    (tmp_path / "h1b").mkdir()
    (tmp_path / "h1b" / "t3_config.json").write_text(cfg)
    (tmp_path / "h1b" / "head.safetensors").write_bytes((root / "h1" / "head.safetensors").read_bytes())
    with pytest.raises(HeadError, match="trained on"):
        named.add("x", str(tmp_path / "h1b"))
    assert named.add("x", str(tmp_path / "h1b"), force=True).name == "x"
    # names
    with pytest.raises(HeadError) as e:
        registry.add("h1", str(root / "h1"))
    assert e.value.status == 409
    with pytest.raises(HeadError):
        registry.add("bad name!", str(root / "h1"))
    with pytest.raises(HeadError) as e:
        registry.remove("nope")
    assert e.value.status == 404
    with pytest.raises(HeadError):
        registry.remove("base")
    assert sorted(registry.names()) == ["h1", "h2"]
    # a head removed while a sequence decodes with it: that sequence finishes, the name is gone
    registry.add("h3", str(root / "h2"))
    h3 = registry.resolve("h3")
    engine = Engine(base, tok).start()
    try:
        seq = _seq(tok, PROMPTS[0], h3, max_tokens=40, ignore_eos=True)
        engine.submit([seq])
        _until(lambda: len(seq.out_ids) >= 1)
        registry.remove("h3")
        assert wait_idle(engine)
    finally:
        engine.close()
    assert len(seq.out_ids) == 40 and seq.out_ids == _reference(refs["h2"], tok, PROMPTS[0], 40)
    with pytest.raises(HeadError) as e:
        registry.resolve("h3")
    assert e.value.status == 404 and e.value.param == "model"


def test_chat_prompts_use_the_template_of_training(random_lm):
    from t3unlearn.data import QAFormatter
    from t3unlearn.serve.app import APIError, ChatMessage, chat_prompt_ids

    _, tok = random_lm
    q = "Where was Ilse Varga born?"

    def msgs(*pairs):
        return [ChatMessage.model_validate({"role": r, "content": c}) for r, c in pairs]

    plain = QAFormatter(tok)  # this tokenizer has no chat template: the project's Question/Answer one
    assert not plain.use_chat
    assert chat_prompt_ids(tok, plain, msgs(("user", q))) == plain.prompt_ids(q)
    parts = msgs(("user", [{"type": "text", "text": "Where was "}, {"type": "text", "text": "Ilse Varga born?"}]))
    assert chat_prompt_ids(tok, plain, parts) == plain.prompt_ids(q)
    ids = chat_prompt_ids(tok, plain, msgs(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."), ("user", q)))
    assert tok.decode(ids, skip_special_tokens=True) == f"Be brief.\nQuestion: Hi\nAnswer: Hello.\nQuestion: {q}\nAnswer:"
    with pytest.raises(APIError) as e:
        chat_prompt_ids(tok, plain, msgs(("user", q), ("assistant", "No.")))
    assert e.value.param == "messages[1].role"

    chat_tok = copy.deepcopy(tok)  # a tokenizer with a chat template: that template
    chat_tok.chat_template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
                              "{% if add_generation_prompt %}<assistant>{% endif %}")
    fmt = QAFormatter(chat_tok)
    assert fmt.use_chat
    system = f"<system>{fmt.system_prompt}\n" if getattr(fmt, "system_prompt", None) else ""  # training's system message
    ids = chat_prompt_ids(chat_tok, fmt, msgs(("user", q)))
    assert ids == fmt.prompt_ids(q) and chat_tok.decode(ids) == f"{system}<user>{q}\n<assistant>"
    ids = chat_prompt_ids(chat_tok, fmt, msgs(("developer", "Be brief."), ("user", q)))  # the client's system message
    assert chat_tok.decode(ids) == f"<system>Be brief.\n<user>{q}\n<assistant>"


@pytest.mark.parametrize("kind", ["gemma2", "gemma3_text"])
def test_sliding_window_models_batch_like_generate_alone(kind, small_tokenizer):
    """Gemma-2/3 mix sliding-window and full-attention layers. The engine keeps every layer's keys in a full cache
    (so groups of different lengths can be padded and merged) and the sliding window is the attention mask's: what
    it decodes for prompts longer than the window, batched and joining mid-way, is what ``generate`` gives alone."""
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = small_tokenizer
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(kind, vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
                               sliding_window=4, layer_types=["sliding_attention", "full_attention"],
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    prompts = ["Question: Where was Ilse Varga born, and in which year did she publish her first novel?",
               "Where was", "Question: What genre does Tomas Reed write?\nAnswer:"]
    engine = Engine(model, tok, max_batch=8).start()
    try:
        first = [_seq(tok, p, max_tokens=10, ignore_eos=True) for p in prompts[:2]]
        engine.submit(first)
        _until(lambda: engine.steps >= 3, 30)
        late = [_seq(tok, prompts[2], max_tokens=10, ignore_eos=True)]  # joins a running batch of other lengths
        engine.submit(late)
        assert wait_idle(engine, 30)
    finally:
        engine.close()
    for p, seq in zip(prompts, first + late):
        assert seq.finish_reason == "length", seq.error
        assert seq.out_ids == _reference(model, tok, p, 10), p


def test_the_copy_exemption_reads_prompt_and_output_so_far():
    """The server's copy-exemption mask is the guided model's (seen_tokens) over each row's whole context: its
    prompt and the tokens generated so far, rows of different lengths side by side, nothing else."""
    import torch

    from t3unlearn.serve.engine import _seen_rows
    from t3unlearn.t3.guidance import seen_tokens

    seqs = [Sequence(prompt_ids=[1, 2], head=None, out_ids=[5]), Sequence(prompt_ids=[3], head=None)]
    got = _seen_rows(seqs, 8, "cpu")
    assert [set(r.nonzero()[:, 0].tolist()) for r in got] == [{1, 2, 5}, {3}]
    want = seen_tokens(torch.tensor([[1, 2, 5]]), 8)[1]
    assert torch.equal(got[:1], want)
