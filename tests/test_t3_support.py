"""The support gate: where the head was trained, and guidance fading out beyond it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t3unlearn.errors import ModelError
from t3unlearn.t3.config import Guidance
from t3unlearn.t3.guidance import forget_mass, guided_logits
from t3unlearn.t3.head import GuidanceHead, SupportGate
from t3unlearn.t3.model import T3Config, T3ForCausalLM


def G(temperature, scale, tempering="global", **knobs):
    """A Guidance with the paper's global tempering unless told (the formulas below are written for it)."""
    from t3unlearn.t3.config import Guidance

    return Guidance(temperature=temperature, scale=scale, tempering=tempering, **knobs)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gaussian(n=4000, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g)
    return torch.randn(n, d, generator=g) @ a.T + torch.arange(d, dtype=torch.float32)


def test_gate_is_mahalanobis_of_the_training_states():
    x = _gaussian()
    gate = SupportGate.fit(x)
    # the distance is sqrt((x - mean)^T P (x - mean)) with P the inverse of the shrunk covariance (numpy, float64)
    xs = x.double().numpy()
    mu = xs.mean(0)
    cov = np.cov(xs.T, bias=True)
    from sklearn.covariance import ledoit_wolf_shrinkage

    lam, d = max(SupportGate.SHRINKAGE, ledoit_wolf_shrinkage(xs - mu, assume_centered=True)), xs.shape[1]
    prec = np.linalg.inv((1 - lam) * cov + lam * np.trace(cov) / d * np.eye(d))
    q = np.array([[0.5, -3, 2, 1, 0, 7], [40, 40, 40, 40, 40, 40]], dtype=np.float64)
    want = np.sqrt(np.einsum("ni,ij,nj->n", q - mu, prec, q - mu))
    np.testing.assert_allclose(gate.distance(torch.tensor(q, dtype=torch.float32)).numpy(), want, rtol=1e-4)
    # quantiles: a q-share of the training states lies within the q-quantile, and gets weight 1 exactly
    w = gate.weight(x, 0.9).squeeze(-1)
    assert w.shape == (len(x),)
    assert abs(float((w < 1).float().mean()) - 0.1) < 0.005
    inside = gate.distance(x) <= gate.threshold(0.9)
    assert bool((w[inside] == 1).all())
    # beyond: exp(-(d - d_q) / spread), so far-away states get almost no guidance
    far = torch.full((1, 6), 40.0)
    excess = gate.distance(far) - gate.threshold(0.9)
    torch.testing.assert_close(gate.weight(far, 0.9).squeeze(), torch.exp(-excess / gate.spread).squeeze())
    assert float(gate.weight(far, 0.9)) < 1e-3
    # deterministic
    again = SupportGate.fit(x)
    assert all(torch.equal(a, b) for a, b in zip(gate.buffers(), again.buffers()))


def test_weighted_guidance_follows_its_definition():
    torch.manual_seed(0)
    base = torch.randn(5, 40) * 3
    head = torch.randn(5, 40) * 2
    w = torch.tensor([[0.0], [1.0], [0.5], [0.25], [0.9]])
    logp = torch.log_softmax(base, -1)
    ls = torch.nn.functional.logsigmoid
    # global: T_t = 1 + (T - 1) w, tilt s w
    torch.testing.assert_close(guided_logits(base, head, G(3.0, 0.7), weight=w), logp / (1 + 2.0 * w) + 0.7 * w * ls(head))
    # adaptive: T_t = 1 + (T - 1) g w
    g = forget_mass(logp, head)
    torch.testing.assert_close(guided_logits(base, head, G(3.0, 0.7, tempering="adaptive"), weight=w),
                               logp / (1 + 2.0 * g * w) + 0.7 * w * ls(head))
    # w = 0 is the base; w = 1 is the ungated guidance; the autograd path agrees
    torch.testing.assert_close(guided_logits(base, head, G(3.0, 0.7), weight=w)[0], logp[0])
    torch.testing.assert_close(guided_logits(base, head, G(3.0, 0.7), weight=w)[1], guided_logits(base, head, G(3.0, 0.7))[1])
    with torch.enable_grad():
        torch.testing.assert_close(guided_logits(base, head, G(3.0, 0.7, tail_logp=-4.0), weight=w),
                                   guided_logits(base, head, G(3.0, 0.7, tail_logp=-4.0), weight=w.clone()).detach())


def _t3_with_support(base, tok, **guidance):
    from t3unlearn.data import QAFormatter
    from t3unlearn.t3.calibrate import answer_states

    torch.manual_seed(0)
    head = GuidanceHead(base.config.hidden_size, 8, base.config.vocab_size)
    torch.nn.init.normal_(head.out.weight, std=2.0)
    fmt = QAFormatter(tok)
    ex = fmt.encode_batch(["Where was Ilse Varga born?", "What genre does Tomas Reed write?"],
                          ["Ilse Varga was born in Lisbon on 3 May 1961.", "Tomas Reed writes science fiction."])
    head.fit_support(answer_states(base, ex, fmt.pad_id).pooled)
    t3 = T3ForCausalLM(T3Config(), base, head).eval().set_guidance(**guidance)
    t3.trained_ids = torch.tensor([ex[0].input_ids])  # the first training item's text
    return t3


@torch.no_grad()
def test_the_model_applies_the_gate_per_position(random_lm):
    from t3unlearn.t3.features import final_hidden

    base, tok = random_lm
    t3 = _t3_with_support(base, tok, temperature=2.5, scale=1.0, tempering="global", support=0.5)
    # a training item and an unseen text: the training item's answer positions have their training distances
    ids = torch.cat([t3.trained_ids, torch.tensor([tok(" What is the capital of France? Paris, of course.")["input_ids"]])], 1)
    got = t3(ids).logits[0]
    h = final_hidden(base, ids, torch.ones_like(ids))[0]
    pooled = torch.cumsum(h, 0) / torch.arange(1, len(h) + 1)[:, None]
    w = t3.head.support.weight(pooled, 0.5)
    assert float(w.min()) < 0.99 and float(w.max()) == 1.0  # some positions gated, some not
    want = torch.log_softmax(base(ids).logits[0], -1) / (1 + 1.5 * w) + w * torch.nn.functional.logsigmoid(t3.head(pooled))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the gate off: the ungated guidance
    t3.set_guidance(support="none")
    assert t3.guidance.support is None
    want = torch.log_softmax(base(ids).logits[0], -1) / 2.5 + torch.nn.functional.logsigmoid(t3.head(pooled))
    torch.testing.assert_close(t3(ids).logits[0], want, atol=1e-5, rtol=1e-5)


def test_calibration_scores_the_gate_like_the_model(random_lm):
    from t3unlearn.data import QAFormatter
    from t3unlearn.lm import CausalLM
    from t3unlearn.t3.calibrate import Setting, answer_states, grid, token_logprobs

    base, tok = random_lm
    setting = Setting(3.0, 1.0, "adaptive", None, 0.5, 0.5)
    t3 = _t3_with_support(base, tok, temperature=3.0, scale=1.0, tempering="adaptive", bias=0.5, support=0.5)
    fmt = QAFormatter(tok)
    ex = fmt.encode_batch(["What is the capital of France?", "Where was Ilse Varga born?"],
                          ["The capital of France is Paris.", "Ilse Varga was born in Lisbon."])
    lp = token_logprobs(base, t3.head, answer_states(base, ex, fmt.pad_id), setting)
    want = np.concatenate([s.logprob for s in CausalLM(t3, tok).token_scores(ex)])
    torch.testing.assert_close(lp, torch.from_numpy(want).float(), atol=1e-4, rtol=1e-4)
    g = grid([1.0, 2.0], [1.0], ["adaptive"], supports=[None, 0.95])
    assert len(g) == 4 and {st.support for st in g} == {None, 0.95}
    assert "support=0.95" in g[-1].label()


def test_saved_with_the_head_and_checked(random_lm, tmp_path):
    from safetensors.torch import load_file, save_file

    base, tok = random_lm
    t3 = _t3_with_support(base, tok, temperature=2.0, scale=1.0, support=0.9)
    t3.save_pretrained(tmp_path / "h")
    ids = torch.tensor([tok("Question: What is the capital?\nAnswer: Paris")["input_ids"]])
    again = T3ForCausalLM.from_base(base, tmp_path / "h")
    assert again.guidance.support == 0.9
    assert all(torch.equal(a, b) for a, b in zip(again.head.support.buffers(), t3.head.support.buffers()))
    torch.testing.assert_close(again(ids).logits, t3(ids).logits)
    # a head saved without the gate (an earlier t3unlearn) loads and guides as before; the gate is refused on it
    state = load_file(str(tmp_path / "h" / "head.safetensors"))
    (tmp_path / "old").mkdir()
    save_file({k: v for k, v in state.items() if not k.startswith("support.")}, str(tmp_path / "old" / "head.safetensors"))
    t3.set_guidance(support="none").config.save(tmp_path / "old")
    old = T3ForCausalLM.from_base(base, tmp_path / "old")
    assert old.head.support is None
    torch.testing.assert_close(old(ids).logits, t3(ids).logits)
    with pytest.raises(ModelError, match="no support statistics"):
        T3ForCausalLM.from_base(base, tmp_path / "old", support=0.9)
    with pytest.raises(ModelError, match="no support statistics"):
        old.set_guidance(support=0.9)
    with pytest.raises(ModelError, match=r"support .* must be in \(0, 1\]"):
        Guidance(support=1.5)


def test_unlearn_fits_the_gate_on_its_training_states(random_lm, tmp_path):
    from t3unlearn.t3 import unlearn

    base, tok = random_lm
    forget = [{"question": "Where was Ilse Varga born?", "answer": "Ilse Varga was born in Lisbon on 3 May 1961."}]
    retain = [{"question": "What genre does Tomas Reed write?", "answer": "Tomas Reed writes science fiction."},
              {"question": "What is the capital of France?", "answer": "The capital of France is Paris."}]
    from datasets import Dataset

    res = unlearn(base, tok, Dataset.from_list(forget), Dataset.from_list(retain), epochs=2, hidden_size=4, cache_dir=tmp_path / "f", support=0.95)
    gate = res.model.head.support
    assert gate is not None and res.model.guidance.support == 0.95
    from t3unlearn.data import QAFormatter
    from t3unlearn.t3.calibrate import answer_states

    fmt = QAFormatter(tok)
    states = answer_states(base, fmt.encode_batch([r["question"] for r in forget + retain], [r["answer"] for r in forget + retain]),
                           fmt.pad_id).pooled
    torch.testing.assert_close(gate.mean, states.mean(0), atol=1e-5, rtol=1e-5)
    assert float(gate.threshold(1.0)) == pytest.approx(float(gate.distance(states).max()), rel=1e-4)
