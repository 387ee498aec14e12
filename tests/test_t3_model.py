"""T3ForCausalLM: guided logits, the pooled KV cache, generate(), save/load, errors."""

from __future__ import annotations

import json

import pytest
import torch

from t3unlearn.errors import ModelError
from t3unlearn.t3.features import final_hidden
from t3unlearn.t3.head import GuidanceHead
from t3unlearn.t3.model import T3Cache, T3Config, T3ForCausalLM


def G(temperature, scale, tempering="global", **knobs):
    """A Guidance with the paper's global tempering unless told (the formulas below are written for it)."""
    from t3unlearn.t3.config import Guidance

    return Guidance(temperature=temperature, scale=scale, tempering=tempering, **knobs)


def _t3(base, *, T=2.5, s=1.0, hidden=8, seed=0, tempering="global"):
    """A T3 model with a random head; the paper's (global) tempering unless asked otherwise."""
    torch.manual_seed(seed)
    head = GuidanceHead(base.config.hidden_size, hidden, base.config.vocab_size)
    torch.nn.init.normal_(head.out.weight, std=2.0)  # a head that visibly tilts
    return T3ForCausalLM(T3Config(t3_temperature=T, t3_scale=s, t3_tempering=tempering), base, head).eval()


def _prompts(tok, texts):
    rows = [tok(t)["input_ids"] for t in texts]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):  # left padding
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


TEXTS = ["Question: Where was Ilse Varga born?\nAnswer:", "Question: What is the capital?\nAnswer:", "Hi"]


@torch.no_grad()
def test_forward_equals_direct_computation(random_lm):
    base, tok = random_lm
    t3 = _t3(base)
    ids, mask = _prompts(tok, TEXTS)
    got = t3(ids, attention_mask=mask).logits
    base_logits = base(ids, attention_mask=mask).logits
    h = final_hidden(base, ids, mask)
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            if not mask[b, t]:
                continue
            pooled = h[b, : t + 1][mask[b, : t + 1].bool()].mean(0)  # direct per-prefix mean, padding excluded
            want = torch.log_softmax(base_logits[b, t], -1) / 2.5 + torch.nn.functional.logsigmoid(t3.head(pooled))
            torch.testing.assert_close(got[b, t], want, atol=1e-5, rtol=1e-5)
    labels = ids.masked_fill(mask == 0, -100)
    loss = t3(ids, attention_mask=mask, labels=labels).loss
    lp = torch.log_softmax(got[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    valid = labels[:, 1:] != -100
    torch.testing.assert_close(loss, -(lp[valid]).mean())


def test_forward_with_grad_equals_the_formula(random_lm):
    """The grad-enabled path (used when a loss is back-propagated through T3) computes the same logits."""
    base, tok = random_lm
    t3 = _t3(base, T=2.0, s=1.5)
    ids, mask = _prompts(tok, TEXTS)
    with torch.no_grad():
        want = t3(ids, attention_mask=mask).logits
        base_logits = base(ids, attention_mask=mask).logits
    with torch.enable_grad():
        got = t3(ids, attention_mask=mask).logits
    torch.testing.assert_close(got.detach(), want)
    # and the formula itself, at the last position of the first prompt
    h = final_hidden(base, ids, mask)[0][mask[0].bool()].mean(0)
    direct = torch.log_softmax(base_logits[0, -1], -1) / 2.0 + 1.5 * torch.nn.functional.logsigmoid(t3.head(h))
    torch.testing.assert_close(got[0, -1].detach(), direct.detach(), atol=1e-5, rtol=1e-5)


def test_guidance_variants_follow_their_definitions():
    from t3unlearn.t3.guidance import forget_mass, guided_logits

    torch.manual_seed(0)
    base = torch.randn(4, 50) * 3
    head = torch.randn(4, 50) * 2
    logp = torch.log_softmax(base, -1)
    ls = torch.nn.functional.logsigmoid
    # the paper's
    torch.testing.assert_close(guided_logits(base, head, G(2.0, 0.7)), logp / 2.0 + 0.7 * ls(head))
    # adaptive: T_t = 1 + (T - 1) * sum_v p(v) (1 - sigmoid(head_v + bias))
    g = (logp.exp() * (1 - torch.sigmoid(head + 0.5))).sum(-1, keepdim=True)
    torch.testing.assert_close(forget_mass(logp, head, 0.5), g)
    torch.testing.assert_close(guided_logits(base, head, G(3.0, 1.0, tempering="adaptive", bias=0.5)),
                               logp / (1 + 2.0 * g) + ls(head + 0.5))
    # a head sure that everything is retained: no tempering at all under "adaptive"
    sure = torch.full_like(head, 30.0)
    torch.testing.assert_close(torch.log_softmax(guided_logits(base, sure, G(3.0, 1.0, tempering="adaptive")), -1), logp, atol=1e-5, rtol=0)
    # tail guard: tempered above tau, the base's slope below
    tau = -4.0
    want = torch.where(logp >= tau, logp / 2.0, tau / 2.0 + (logp - tau)) + ls(head)
    torch.testing.assert_close(guided_logits(base, head, G(2.0, 1.0, tail_logp=tau)), want)
    # T = 1: every tempering is the identity
    for mode in ("global", "adaptive"):
        torch.testing.assert_close(guided_logits(base, head, G(1.0, 1.0, tempering=mode, tail_logp=tau)), logp + ls(head))
    # the head's floor: the biased head logits read as max(head + bias, floor), in the tilt and in the forget mass
    floored = (head + 0.5).clamp(min=-1.0)
    torch.testing.assert_close(guided_logits(base, head, G(2.0, 0.7, bias=0.5, floor=-1.0)), logp / 2.0 + 0.7 * ls(floored))
    g = (logp.exp() * (1 - torch.sigmoid(floored))).sum(-1, keepdim=True)
    torch.testing.assert_close(forget_mass(logp, head, 0.5, -1.0), g)
    torch.testing.assert_close(guided_logits(base, head, G(3.0, 0.7, tempering="adaptive", bias=0.5, floor=-1.0)),
                               logp / (1 + 2.0 * g) + 0.7 * ls(floored))
    # so no token loses more than s * log(1 + e^-floor) to the tilt, where without it the surest lose far more
    tilt = guided_logits(base, head * 10, G(1.0, 0.7, floor=-1.0)) - logp
    assert tilt.min() >= 0.7 * ls(torch.tensor(-1.0)) - 1e-6
    assert (guided_logits(base, head * 10, G(1.0, 0.7)) - logp).min() < 2 * tilt.min()


def test_unknown_keywords_are_refused_and_loading_ones_pass_through(random_lm, tmp_path, monkeypatch):
    base, tok = random_lm
    t3 = _t3(base, T=2.0)
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    t3.config.base_model_name_or_path = str(tmp_path / "base")
    t3.save_pretrained(tmp_path / "head")
    with pytest.raises(ModelError, match="temprature"):
        T3ForCausalLM.from_pretrained(tmp_path / "head", temprature=1.0)
    from t3unlearn.lm import load_lm

    with pytest.raises(ModelError, match="device_mapp"):
        load_lm(str(tmp_path / "head"), device="cpu", device_mapp="auto")
    # a device_map reaches transformers (accelerate places the base; the head goes beside its output layer)
    ids = torch.tensor([[1, 5, 7, 9]])
    import transformers

    seen, original = {}, transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: seen.update(k) or original(*a, **k))
    mapped = load_lm(str(tmp_path / "head"), device_map={"": "cpu"}).model
    assert seen["device_map"] == {"": "cpu"}
    assert mapped.head.out.weight.device == mapped.base.get_output_embeddings().weight.device
    plain = T3ForCausalLM.from_pretrained(tmp_path / "head", device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(mapped(input_ids=ids).logits, plain(input_ids=ids).logits)
    bf = T3ForCausalLM.from_pretrained(tmp_path / "head", dtype=torch.bfloat16, device="cpu")
    assert bf.base.dtype == torch.bfloat16 and bf.head.out.weight.dtype == torch.float32
    adaptive = T3ForCausalLM.from_pretrained(tmp_path / "head", tempering="adaptive", bias=-1.0, device="cpu")
    assert adaptive.guidance.tempering == "adaptive" and adaptive.guidance.bias == -1.0 and adaptive.temperature == 2.0
    with pytest.raises(ModelError, match="tempering"):
        adaptive.set_guidance(tempering="local")


def test_first_head_format_still_loads(random_lm, tmp_path):
    """Heads written before the format became T3Config's fields (format_version 1) load unchanged."""
    from safetensors.torch import save_file

    base, _ = random_lm
    t3 = _t3(base, T=3.0, s=0.5)
    (tmp_path / "v1").mkdir()
    save_file({k: v.contiguous() for k, v in t3.head.state_dict().items()}, str(tmp_path / "v1" / "head.safetensors"))
    d, v = base.config.hidden_size, base.config.vocab_size
    (tmp_path / "v1" / "t3_config.json").write_text(json.dumps({
        "format": "t3unlearn-head", "format_version": 1, "temperature": 3.0, "scale": 0.5,
        "head": {"in_features": d, "hidden": 8, "vocab_size": v, "activation": "identity", "layers": 1},
        "pooling": "mean", "layer": "final_norm", "base_model_name_or_path": None,
        "base": {"vocab_size": v, "hidden_size": d, "tokenizer_hash": None}, "training": {}, "metrics": {}}))
    old = T3ForCausalLM.from_base(base, tmp_path / "v1")
    assert old.temperature == 3.0 and old.scale == 0.5
    torch.testing.assert_close(old.head.out.weight, t3.head.out.weight)


@torch.no_grad()
def test_t1_s0_is_the_base(random_lm):
    base, tok = random_lm
    t3 = _t3(base, T=1.0, s=0.0)
    ids, mask = _prompts(tok, TEXTS)
    got = torch.log_softmax(t3(ids, attention_mask=mask).logits, -1)
    want = torch.log_softmax(base(ids, attention_mask=mask).logits, -1)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    kw = dict(attention_mask=mask, max_new_tokens=6, pad_token_id=tok.pad_token_id)
    assert torch.equal(t3.generate(ids, **kw), base.generate(ids, **kw))


@torch.no_grad()
def test_padding_stays_out_of_the_pool(random_lm):
    base, tok = random_lm
    t3 = _t3(base)
    ids, mask = _prompts(tok, TEXTS)
    batched = t3(ids, attention_mask=mask).logits[:, -1]
    for b, text in enumerate(TEXTS):
        alone = t3(torch.tensor([tok(text)["input_ids"]])).logits[0, -1]
        torch.testing.assert_close(batched[b], alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "kw",
    [
        dict(do_sample=False),
        dict(num_beams=3),
        dict(num_beams=2, num_return_sequences=2),
        dict(do_sample=True, top_k=20, top_p=0.9, num_return_sequences=2),
    ],
    ids=["greedy", "beams", "beams-nrs", "sample"],
)
@torch.no_grad()
def test_generate_with_cache_equals_without(random_lm, kw):
    base, tok = random_lm
    t3 = _t3(base)
    ids, mask = _prompts(tok, TEXTS)
    common = dict(attention_mask=mask, max_new_tokens=10, pad_token_id=tok.pad_token_id, **kw)
    torch.manual_seed(3)
    cached = t3.generate(ids, **common)
    torch.manual_seed(3)
    plain = t3.generate(ids, use_cache=False, **common)
    assert torch.equal(cached, plain)
    assert cached.shape[0] == ids.shape[0] * kw.get("num_return_sequences", 1)


@pytest.mark.parametrize("name,copy", [("past_key_values", None), ("cache", None), ("cache", 1.0)])  # old and new names
@torch.no_grad()
def test_cached_steps_equal_full_forward(random_lm, name, copy):
    base, tok = random_lm
    t3 = _t3(base).set_guidance(copy_floor=copy)
    ids, mask = _prompts(tok, TEXTS)
    pos = (mask.long().cumsum(-1) - 1).clamp_min(0)
    full = t3(ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
    cache = T3Cache(config=base.config)
    first = t3(ids[:, :4], attention_mask=mask[:, :4], position_ids=pos[:, :4], use_cache=True, **{name: cache})
    steps = [first.logits]
    for t in range(4, ids.shape[1]):
        out = t3(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], position_ids=pos[:, t : t + 1],
                 use_cache=True, **{name: cache})
        steps.append(out.logits)
    stepped = torch.cat(steps, 1)
    valid = mask.bool()
    torch.testing.assert_close(stepped[valid], full[valid], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_copy_exemption_spares_the_tokens_of_the_context(random_lm):
    """With a copy floor, a token already in the context (left padding excluded) is read as at least the floor:
    at T = 1 its guided logit is the base's log-prob plus s x logsigmoid(max(head, floor)); every other token keeps
    the full tilt. Beam search and sampling give the same with and without the cache."""
    from t3unlearn.t3.guidance import seen_tokens

    from t3unlearn.t3.features import pool_prefix
    from t3unlearn.t3.guidance import seen_tokens

    base, tok = random_lm
    t3 = _t3(base).set_guidance(temperature=1.0, scale=2.0, copy_floor=1.5)
    ids, mask = _prompts(tok, TEXTS)
    got = torch.log_softmax(t3(ids, attention_mask=mask, use_cache=False).logits, -1)
    logp = torch.log_softmax(base(ids, attention_mask=mask).logits.float(), -1)
    head = t3.head(pool_prefix(final_hidden(base, ids, mask), mask.float())[0])
    seen, _ = seen_tokens(ids, head.shape[-1], mask=mask)
    for b in range(ids.shape[0]):  # at the last position: exactly the row's tokens, its left padding not counted
        assert set(seen[b, -1].nonzero()[:, 0].tolist()) == set(ids[b][mask[b].bool()].tolist())
    want = torch.log_softmax(logp + 2.0 * torch.nn.functional.logsigmoid(torch.where(seen, head.clamp(min=1.5), head)), -1)
    valid = mask.bool()
    torch.testing.assert_close(got[valid], want[valid], atol=1e-4, rtol=1e-4)
    off = torch.log_softmax(t3.set_guidance(copy_floor="none")(ids, attention_mask=mask).logits, -1)
    assert (got - off)[seen & valid.unsqueeze(-1)].mean() > (got - off)[~seen & valid.unsqueeze(-1)].mean()
    t3.set_guidance(temperature=2.0, copy_floor=1.5)
    for kw in (dict(num_beams=3), dict(do_sample=True, top_k=20)):
        torch.manual_seed(3)
        cached = t3.generate(ids, attention_mask=mask, max_new_tokens=8, pad_token_id=tok.pad_token_id, **kw)
        torch.manual_seed(3)
        plain = t3.generate(ids, attention_mask=mask, max_new_tokens=8, pad_token_id=tok.pad_token_id,
                            use_cache=False, **kw)
        assert torch.equal(cached, plain)


@torch.no_grad()
def test_no_deprecated_cache_keyword_on_the_way(random_lm):
    """generate and cached steps pass the cache under the name the installed transformers uses (it renamed
    past_key_values to cache and warns until 5.40, then drops the alias)."""
    import warnings

    base, tok = random_lm
    t3 = _t3(base)
    ids, mask = _prompts(tok, TEXTS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        t3.generate(ids, attention_mask=mask, max_new_tokens=3, pad_token_id=tok.pad_token_id)
        out = t3(ids, attention_mask=mask, use_cache=True)
    from t3unlearn.lm import output_cache

    assert isinstance(output_cache(out), T3Cache) and output_cache(out).t3_sum is not None


@torch.no_grad()
def test_streamer_and_cache_api(random_lm):
    from transformers import TextIteratorStreamer

    base, tok = random_lm
    t3 = _t3(base)
    streamer = TextIteratorStreamer(tok, skip_prompt=True)
    ids = torch.tensor([tok(TEXTS[0])["input_ids"]])
    out = t3.generate(ids, max_new_tokens=5, streamer=streamer, pad_token_id=tok.pad_token_id)
    text = "".join(streamer)
    assert text == tok.decode(out[0, ids.shape[1] :])
    cache = T3Cache(config=base.config)
    t3(ids, past_key_values=cache, use_cache=True)
    with pytest.raises(NotImplementedError, match="cropped"):
        cache.crop(1)


@torch.no_grad()
def test_deepcopy_and_shared_base(random_lm):
    import copy

    base, tok = random_lm
    t3 = _t3(base)
    other = _t3(base, T=1.0, s=0.0)  # a second wrapper over the same base
    ids, mask = _prompts(tok, TEXTS)
    want = t3(ids, attention_mask=mask).logits
    twin = copy.deepcopy(t3)
    torch.testing.assert_close(twin(ids, attention_mask=mask).logits, want)
    torch.testing.assert_close(t3(ids, attention_mask=mask).logits, want)
    torch.testing.assert_close(torch.log_softmax(other(ids, attention_mask=mask).logits, -1),
                               torch.log_softmax(base(ids, attention_mask=mask).logits, -1), atol=1e-6, rtol=0)


def test_temperature_must_be_positive(random_lm):
    base, _ = random_lm
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ModelError, match="temperature"):
            T3ForCausalLM(T3Config(t3_temperature=float(bad)), base)
    t3 = _t3(base)
    with pytest.raises(ModelError, match="temperature"):
        t3.temperature = 0


@torch.no_grad()
def test_save_load_round_trip(random_lm, tmp_path):
    base, tok = random_lm
    t3 = _t3(base, T=3.0, s=0.5)
    t3.config.base_model_name_or_path = str(tmp_path / "base")
    t3.save_pretrained(tmp_path / "head")
    assert sorted(p.name for p in (tmp_path / "head").iterdir()) == ["head.safetensors", "t3_config.json"]
    cfg = json.loads((tmp_path / "head" / "t3_config.json").read_text())
    assert cfg["format"] == "t3unlearn-head" and cfg["format_version"] == 2
    assert cfg["t3_temperature"] == 3.0 and cfg["t3_scale"] == 0.5 and cfg["head_hidden"] == 8
    assert set(cfg) == {"format", "format_version", *T3Config.FILE_FIELDS}  # the config's fields, nothing else
    assert T3ForCausalLM.base_model_path(tmp_path / "head") == str(tmp_path / "base")

    ids, mask = _prompts(tok, TEXTS)
    again = T3ForCausalLM.from_base(base, tmp_path / "head")
    torch.testing.assert_close(again(ids, attention_mask=mask).logits, t3(ids, attention_mask=mask).logits)
    t1 = T3ForCausalLM.from_base(base, tmp_path / "head", temperature=1.0, scale=0.0)
    want = torch.log_softmax(base(ids, attention_mask=mask).logits, -1)
    torch.testing.assert_close(torch.log_softmax(t1(ids, attention_mask=mask).logits, -1), want, atol=1e-6, rtol=0)

    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    loaded = T3ForCausalLM.from_pretrained(tmp_path / "head", temperature=2.0)
    assert loaded.temperature == 2.0 and loaded.scale == 0.5
    torch.testing.assert_close(loaded.head.out.weight, t3.head.out.weight)

    from t3unlearn.lm import load_lm

    lm = load_lm(str(tmp_path / "head"), device="cpu")
    assert isinstance(lm.model, T3ForCausalLM)
    scores = lm.token_scores(lm.encode(["Where was Ilse Varga born?"], ["In Lisbon."]))
    assert scores[0].logprob.shape[0] > 0 and (scores[0].logprob <= 0).all()
    lm2 = load_lm(str(tmp_path / "base"), head=str(tmp_path / "head"), device="cpu", temperature=1.5)
    assert lm2.model.temperature == 1.5


def test_saving_a_head_never_replaces_a_model_or_a_file(random_lm, tmp_path):
    """save_pretrained replaces its directory whole: into the base model's own directory (as one saves an adapter
    beside its model) it would delete the model. A file or a non-empty directory that is no head is refused and
    left as it was; an existing head is replaced, and an empty directory is filled."""
    base, tok = random_lm
    t3 = _t3(base)
    base.save_pretrained(tmp_path / "model")
    before = sorted(p.name for p in (tmp_path / "model").iterdir())
    with pytest.raises(ModelError, match=r"model is a non-empty directory that is not a T3 head \(it would be replaced whole\)"):
        t3.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == before and "model.safetensors" in before
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match=r"notes.txt is a file; give a directory"):
        t3.save_pretrained(tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    t3.save_pretrained(tmp_path / "empty")
    t3.set_guidance(temperature=3.0).save_pretrained(tmp_path / "empty")  # a head: replaced
    assert json.loads((tmp_path / "empty" / "t3_config.json").read_text())["t3_temperature"] == 3.0


def test_bad_heads_give_clear_errors(random_lm, tmp_path, small_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    base, _ = random_lm
    _t3(base).save_pretrained(tmp_path / "head")
    other = LlamaForCausalLM(LlamaConfig(vocab_size=77, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(ModelError, match="trained on a base with hidden size"):
        T3ForCausalLM.from_base(other, tmp_path / "head")
    with pytest.raises(ModelError, match="temperature"):
        T3ForCausalLM.from_base(base, tmp_path / "head", temperature=0)
    with pytest.raises(ModelError, match="no t3_config.json"):
        T3ForCausalLM.from_base(base, tmp_path)
    (tmp_path / "head" / "head.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="corrupt"):
        T3ForCausalLM.from_base(base, tmp_path / "head")
    (tmp_path / "head" / "head.safetensors").unlink()
    with pytest.raises(ModelError, match="missing"):
        T3ForCausalLM.from_base(base, tmp_path / "head")
    (tmp_path / "head" / "t3_config.json").write_text("{not json")
    with pytest.raises(ModelError, match="corrupt"):
        T3ForCausalLM.from_base(base, tmp_path / "head")


def test_word_pieces_of_three_kinds_of_tokenizer(small_tokenizer):
    """Byte-level BPE ('Ġ') and SentencePiece ('▁') mark a word's first piece; the letters-only tokens without the mark
    continue a word. A word-level vocabulary marks nothing: every token is a word, so none is a piece."""
    from t3unlearn.t3.head import word_pieces

    class Vocab:  # what word_pieces reads of a tokenizer
        def __init__(self, tokens):
            self.tokens, self.all_special_tokens = tokens, ["<s>"]

        def __len__(self):
            return len(self.tokens)

        def convert_ids_to_tokens(self, ids):
            return [self.tokens[i] for i in ids]

    sp = Vocab(["<s>", "▁Zuz", "ana", "▁was", ",", "19", "▁born", "ford"])
    assert word_pieces(sp).tolist() == [False, False, True, False, False, False, False, True]
    assert word_pieces(sp, vocab_size=10).tolist()[-3:] == [True, False, False]  # a padded vocabulary: no pieces past it
    assert not word_pieces(Vocab(["<s>", "Zuzana", "was", "born"])).any()
    got = word_pieces(small_tokenizer)
    tokens = small_tokenizer.convert_ids_to_tokens(list(range(len(small_tokenizer))))
    assert got.any() and not got.all()
    for t, piece in zip(tokens, got.tolist()):
        assert piece == (t.isalpha() and not t.startswith("Ġ") and t not in small_tokenizer.all_special_tokens), t


@torch.no_grad()
def test_piece_exemption_spares_the_tokens_that_continue_a_word(random_lm, tmp_path):
    """With a piece floor, a token that continues a word is read as at least the floor (at T = 1: its guided logit is
    the base's log-prob plus s x logsigmoid(max(head, floor))); every word's first piece keeps the full tilt. The
    table is saved with the head; a head without one refuses the knob in one line."""
    from t3unlearn.t3.features import pool_prefix
    from t3unlearn.t3.head import word_pieces

    base, tok = random_lm
    t3 = _t3(base)
    with pytest.raises(ModelError, match="word-piece table"):
        t3.set_guidance(piece_floor=2.0)
    pieces = word_pieces(tok, base.config.vocab_size)
    t3.head.set_pieces(pieces)
    t3.set_guidance(temperature=1.0, scale=2.0, piece_floor=1.5)
    ids, mask = _prompts(tok, TEXTS)
    got = torch.log_softmax(t3(ids, attention_mask=mask, use_cache=False).logits, -1)
    logp = torch.log_softmax(base(ids, attention_mask=mask).logits.float(), -1)
    head = t3.head(pool_prefix(final_hidden(base, ids, mask), mask.float())[0])
    want = torch.log_softmax(logp + 2.0 * torch.nn.functional.logsigmoid(torch.where(pieces, head.clamp(min=1.5), head)), -1)
    valid = mask.bool()
    torch.testing.assert_close(got[valid], want[valid], atol=1e-4, rtol=1e-4)
    off = torch.log_softmax(t3.set_guidance(piece_floor="none")(ids, attention_mask=mask).logits, -1)
    gain = (got - off)[valid]
    assert gain[:, pieces].mean() > gain[:, ~pieces].mean()
    t3.set_guidance(piece_floor=1.5).save_pretrained(tmp_path / "head")
    again = T3ForCausalLM.from_base(base, tmp_path / "head")
    assert torch.equal(again.head.piece_mask(), pieces) and again.guidance.piece_floor == 1.5
    torch.testing.assert_close(torch.log_softmax(again(ids, attention_mask=mask).logits, -1)[valid], got[valid])


@torch.no_grad()
def test_base_spelling_keeps_the_base_probability_of_word_pieces(random_lm, tmp_path):
    """spelling='base': every token that continues a word has exactly the base's probability; the other tokens share
    the rest of the mass in the proportions the guided distribution gives them (here T = 2, global, s = 1.5). A head
    without a word-piece table refuses it in one line; the knob is saved with the head."""
    from t3unlearn.t3.features import pool_prefix
    from t3unlearn.t3.head import word_pieces

    base, tok = random_lm
    t3 = _t3(base)
    with pytest.raises(ModelError, match="word-piece table"):
        t3.set_guidance(spelling="base")
    pieces = word_pieces(tok, base.config.vocab_size)
    assert 0 < int(pieces.sum()) < pieces.numel()
    t3.head.set_pieces(pieces)
    t3.set_guidance(temperature=2.0, scale=1.5, tempering="global", spelling="base")
    ids, mask = _prompts(tok, TEXTS)
    valid = mask.bool()
    got = torch.log_softmax(t3(ids, attention_mask=mask, use_cache=False).logits, -1)[valid]
    logp = torch.log_softmax(base(ids, attention_mask=mask).logits.float(), -1)[valid]
    head = t3.head(pool_prefix(final_hidden(base, ids, mask), mask.float())[0])[valid]
    torch.testing.assert_close(got[:, pieces], logp[:, pieces], atol=1e-5, rtol=1e-5)
    guided = torch.log_softmax(logp / 2.0 + 1.5 * torch.nn.functional.logsigmoid(head), -1)
    rest = torch.log1p(-logp[:, pieces].exp().sum(-1, keepdim=True))
    want = torch.log_softmax(guided[:, ~pieces], -1) + rest
    torch.testing.assert_close(got[:, ~pieces], want, atol=1e-4, rtol=1e-4)
    guided_only = torch.log_softmax(t3.set_guidance(spelling="guided")(ids, attention_mask=mask).logits, -1)[valid]
    assert (guided_only[:, pieces] - logp[:, pieces]).abs().max() > 1e-2  # without it, the pieces are tempered and tilted
    t3.set_guidance(spelling="base").save_pretrained(tmp_path / "head")
    again = T3ForCausalLM.from_base(base, tmp_path / "head")
    assert again.guidance.spelling == "base"
    torch.testing.assert_close(torch.log_softmax(again(ids, attention_mask=mask).logits, -1)[valid], got)


@pytest.mark.parametrize("guidance", [
    dict(temperature=2.5, scale=0.7, tempering="adaptive", spelling="base"),
    dict(temperature=2.0, scale=1.0, tail_logp=-3.0, bias=0.5, floor=-2.0, spelling="base"),
    dict(temperature=1.0, scale=1.5, spelling="base"),  # T = 1: the tilt is done in place
    dict(temperature=3.0, scale=0.5, tempering="adaptive", piece_floor=10.0, spelling="base"),
    dict(temperature=2.0, scale=0.7, tempering="adaptive", piece_floor=10.0),
])
@pytest.mark.parametrize("weighted", [False, True])
def test_scoring_a_target_gives_the_guided_distribution(guidance, weighted):
    """guided_logprobs_at (calibration's scoring: the spelled path tempers and tilts only the tokens that do not
    continue a word) gives log_softmax(guided_logits) at the target, for pieces and other tokens, with the support
    gate's weight, and never writes into the base's log-probs."""
    from t3unlearn.t3.config import Guidance
    from t3unlearn.t3.guidance import HeadReading, guided_logits, guided_logprobs_at

    g = torch.Generator().manual_seed(0)
    n, v = 6, 40
    logp = torch.log_softmax(3 * torch.randn(n, v, generator=g), -1)
    head = 2 * torch.randn(n, v, generator=g)
    pieces = torch.rand(v, generator=g) < 0.4
    weight = torch.rand(n, 1, generator=g) if weighted else None
    target = torch.stack([torch.nonzero(pieces)[0, 0], torch.nonzero(~pieces)[0, 0]]).repeat(n // 2).unsqueeze(-1)
    st = Guidance(**guidance)
    before = logp.clone()
    want = torch.log_softmax(guided_logits(logp, head, st, weight=weight, pieces=pieces, normalized=True), -1)
    reading = HeadReading(head, st.bias, st.floor, pieces=pieces, piece_floor=st.piece_floor)
    got = guided_logprobs_at(logp, reading, st, target, weight=weight)
    torch.testing.assert_close(got, want.gather(-1, target), atol=1e-5, rtol=1e-5)
    assert torch.equal(logp, before)
    if st.spelling == "base":  # a piece keeps the base's log-prob
        assert torch.equal(got[0::2], logp.gather(-1, target)[0::2])
