"""The hybrid SFD + SISS, the RL formulation of λ and multi-class SFD's adaptive weights: their pieces
against hand computations, and the methods on the tiny preset (behaviour, not quality; quality is in
docs/images.md)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from t3unlearn.errors import T3Error

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def tiny(module_home):
    from t3unlearn.images.api import ensure_generator
    from t3unlearn.images.data import ensure_benchmark

    return ensure_benchmark("tiny"), {f: ensure_generator(f, "full", preset="tiny", progress=False) for f in ("ddpm", "vae")}


def test_score_forgetting_loss_asks_the_teacher_for_the_safe_label_and_matches_a_hand_computation():
    from t3unlearn.images.methods import score_forgetting_loss

    seen = {}

    def teacher(xt, t, class_labels):
        seen["labels"] = class_labels.tolist()
        return SimpleNamespace(sample=torch.full_like(xt, 2.0) * class_labels.view(-1, 1, 1, 1))

    w = torch.tensor(0.5, requires_grad=True)

    def student(xt, t, y):
        seen["student_labels"] = y.tolist()
        return w * torch.ones_like(xt)

    ab = torch.linspace(0.99, 0.01, 10)
    x0 = torch.zeros(2, 1, 2, 2)
    loss = score_forgetting_loss(student, teacher, ab, x0, torch.tensor([1, 7]), 3, 0, 10, torch.Generator().manual_seed(0))
    # the teacher says 2 x 3 = 6 everywhere for the safe label 3; the student says 0.5: (0.5 - 6)^2 per pixel
    assert seen["labels"] == [3, 3] and seen["student_labels"] == [1, 7]
    assert torch.allclose(loss, torch.full((2,), 30.25))
    loss.mean().backward()
    assert w.grad.item() == pytest.approx(2 * (0.5 - 6))  # only the student side carries a gradient


def test_adaptive_label_weights_follow_each_forget_labels_lag():
    from t3unlearn.images.sfd import adaptive_label_weights

    ema = {}
    y = torch.tensor([1, 1, 7, 3])
    w = adaptive_label_weights(y, torch.tensor([1.0, 3.0, 1.0, 5.0]), (1, 7), ema, 0.5)
    # label 1's mean discrepancy 2, label 7's 1: mean 1.5; weights 2/1.5 and 1/1.5; label 3 is not forgotten: 1
    assert ema == {1: 2.0, 7: 1.0}
    assert torch.allclose(w, torch.tensor([4 / 3, 4 / 3, 2 / 3, 1.0]))
    w = adaptive_label_weights(torch.tensor([7, 7]), torch.tensor([5.0, 5.0]), (1, 7), ema, 0.5)
    assert ema == {1: 2.0, 7: 3.0}  # 0.5 x 1 + 0.5 x 5; label 1 absent from the batch keeps its value
    assert torch.allclose(w, torch.tensor([3 / 2.5, 3 / 2.5]))


def test_generator_loss_weights_scale_each_samples_gradient():
    from t3unlearn.images.sfd import generator_loss

    f_real = torch.tensor([[[[0.0, 0.0]]], [[[1.0, 1.0]]]])
    f_fake = torch.tensor([[[[1.0, -1.0]]], [[[0.0, 2.0]]]])
    grads = []
    for weights in (None, torch.tensor([1.0, 1.0]), torch.tensor([2.0, 0.0])):
        x_g = torch.tensor([[[[0.5, -0.5]]], [[[1.0, 0.0]]]], requires_grad=True)
        generator_loss(x_g, f_real, f_fake, weights).backward()
        grads.append(x_g.grad)
    assert torch.equal(grads[0], grads[1])
    assert torch.allclose(grads[2][0], 2 * grads[0][0]) and torch.equal(grads[2][1], torch.zeros(1, 1, 2))


def test_policy_log_prob_is_the_gaussian_density():
    from t3unlearn.images.methods import policy_log_prob

    mu, log_sigma, u = torch.tensor(0.3), torch.tensor(-0.2), torch.tensor(1.1)
    ref = torch.distributions.Normal(mu, log_sigma.exp()).log_prob(u)
    assert policy_log_prob(mu, log_sigma, u).item() == pytest.approx(ref.item(), abs=1e-6)


def test_hybrid_with_no_sfd_weight_is_siss_and_with_it_is_not(tiny):
    from t3unlearn.images.models import ImageGenerator
    from t3unlearn.images.trainer import unlearn

    bench, models = tiny
    gen = ImageGenerator.load(models["ddpm"])
    before = _params(gen.model)
    cfg = {"steps": 2, "batch_size": 4, "lr": 1e-3}
    small = {"pool_size": 8, "pool_steps": 2}
    siss, _ = unlearn(gen, bench, "siss", config=cfg, progress=False)
    off, _ = unlearn(gen, bench, "sfd_siss", params={**small, "sfd_weight": 0.0}, config=cfg, progress=False)
    on, rec = unlearn(gen, bench, "sfd_siss", params=small, config=cfg, progress=False)
    again, _ = unlearn(gen, bench, "sfd_siss", params=small, config=cfg, progress=False)
    assert _same(before, _params(gen.model))  # the source (and so the teacher) is untouched
    assert _same(_params(siss.model), _params(off.model))  # the term's draws do not disturb SISS's
    assert not _same(_params(siss.model), _params(on.model))
    assert _same(_params(on.model), _params(again.model))  # same seed, same weights
    h = rec["history"]
    assert h[0]["sfd_weight"] == pytest.approx(0.1) and all(0 < x["sfd_weight"] <= 0.1 and x["sfd"] > 0 for x in h)
    with pytest.raises(T3Error, match="needs a DDPM"):
        unlearn(ImageGenerator.load(models["vae"]), bench, "sfd_siss", params=small, config=cfg, progress=False)
    with pytest.raises(T3Error, match="safe label not among them"):
        unlearn(gen, bench, "sfd_siss", params={**small, "safe_label": 1}, config=cfg, progress=False)


@pytest.mark.parametrize("family", ["ddpm", "vae"])
def test_rl_policy_holds_lambda_between_decisions_and_learns_from_the_reward(family, tiny):
    from t3unlearn.images.models import ImageGenerator
    from t3unlearn.images.trainer import unlearn

    bench, models = tiny
    gen = ImageGenerator.load(models[family])
    cfg = {"steps": 8, "batch_size": 4, "lr": 1e-3}
    a, rec = unlearn(gen, bench, "rl_siss", params={"interval": 2}, config=cfg, progress=False)
    b, _ = unlearn(gen, bench, "rl_siss", params={"interval": 2}, config=cfg, progress=False)
    assert _same(_params(a.model), _params(b.model))
    h = rec["history"]
    lams = [x["lambda"] for x in h]
    assert all(lams[i] == lams[i + 1] for i in (0, 2, 4, 6)) and len(set(lams)) == 4
    assert all(0 < x < 1 for x in lams)
    # decisions at steps 2, 4, 6 are rewarded (forget-loss growth minus retain-loss growth of the probes)
    rewarded = [x for x in h if "reward" in x]
    assert [x["step"] for x in rewarded] == [2, 4, 6]
    for x in rewarded:
        prev = h[x["step"] - 2]
        assert x["reward"] == pytest.approx(math.log(x["probe_forget"] / prev["probe_forget"])
                                            - math.log(x["probe_retain"] / prev["probe_retain"]), abs=1e-5)  # history: 6 decimals
    # the policy moved: its mean at step 6 is not its prior mean (step 2's update has a zero advantage,
    # step 4's does not and shows at the next decision)
    assert h[4]["mu"] == h[0]["mu"] and h[6]["mu"] != pytest.approx(h[0]["mu"], abs=1e-9)
    assert "inference_net" in rec
    with pytest.raises(T3Error, match="interval >= 1"):
        unlearn(gen, bench, "rl_siss", params={"interval": 0}, config=cfg, progress=False)


def test_multi_class_sfd_adaptive_weights_are_recorded_and_change_the_student(module_home):
    from t3unlearn.images.api import ensure_generator
    from t3unlearn.images.models import ImageGenerator
    from t3unlearn.images.sfd import SFDConfig, distill

    full = ensure_generator("ddpm", "full", preset="tiny", progress=False)
    base = dict(steps=3, batch_size=16, lr=1e-3, forget_labels=(1, 7))
    plain, _ = distill(ImageGenerator.load(full), SFDConfig(**base), progress=False)
    ada, rec = distill(ImageGenerator.load(full), SFDConfig(**base, adaptive_weights=True), progress=False)
    assert not _same(_params(plain.model), _params(ada.model))
    w = rec["history"][-1]["label_weights"]
    assert set(w) <= {"1", "7"} and sum(w.values()) / len(w) == pytest.approx(1.0, abs=1e-3)
    # off, its settings do not enter the cache key (runs made before it existed stay valid)
    assert "weight_ema" not in SFDConfig(**base).key() and SFDConfig(**base, adaptive_weights=True).key()["weight_ema"] == 0.9
    with pytest.raises(T3Error, match="weight_ema"):
        SFDConfig(weight_ema=1.0)


def test_images_unlearn_help_names_every_method(capsys):
    from t3unlearn.commands.main import main
    from t3unlearn.images.methods import METHODS

    with pytest.raises(SystemExit):
        main(["images", "unlearn", "--help"])
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.split("methods (--method")[1].split("examples:")[0].splitlines()
              if line.startswith("  ") and not line.startswith("   ")}
    assert listed == set(METHODS)


def test_compare_default_methods_are_the_packages():
    from t3unlearn.commands import images as cli
    from t3unlearn.images.methods import DEFAULT_METHODS, METHODS

    assert cli._DEFAULT_METHODS == DEFAULT_METHODS and set(DEFAULT_METHODS) <= set(METHODS)
