"""Score Forgetting Distillation: its loss against a hand computation, the label swap, the one-step
generator it distils (tiny preset: behaviour, not quality; quality is in docs/images.md)."""

from __future__ import annotations

import pytest
import torch

from t3unlearn.errors import T3Error

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_generator_loss_gradient_is_the_normalised_score_difference():
    from t3unlearn.images.sfd import generator_loss

    x_g = torch.tensor([[[[0.5, -0.5]]], [[[1.0, 0.0]]]], requires_grad=True)  # 2 samples of 2 pixels
    f_real = torch.tensor([[[[0.0, 0.0]]], [[[1.0, 1.0]]]])
    f_fake = torch.tensor([[[[1.0, -1.0]]], [[[0.0, 2.0]]]])
    loss = generator_loss(x_g, f_real, f_fake)
    loss.backward()
    # by hand: w = mean |x_g - f_real| per sample = (0.5 + 0.5) / 2 = 0.5 and (0 + 1) / 2 = 0.5;
    # step = (f_fake - f_real) / w = [2, -2] and [-2, 2]; loss = 0.5 * mean(step^2) = 0.5 * 4 = 2;
    # d loss / d x_g = step / (number of entries = 4)
    assert loss.item() == pytest.approx(2.0)
    assert torch.allclose(x_g.grad, torch.tensor([[[[0.5, -0.5]]], [[[-0.5, 0.5]]]]))


def test_sid_loss_has_the_one_minus_alpha_term_through_the_scores_and_reduces_to_dmd_without_them():
    from t3unlearn.images.sfd import generator_loss, sid_generator_loss

    x0 = torch.tensor([[[[0.5, -0.5]]], [[[1.0, 0.25]]]])  # 2 samples of 2 pixels

    def grads(alpha, live=True):
        x = x0.clone().requires_grad_(True)
        f_real, f_fake = 2.0 * x, 0.5 * x + 1.0  # scores that depend on the sample, as the networks' do
        if not live:
            f_real, f_fake = f_real.detach(), f_fake.detach()
        sid_generator_loss(x, f_real, f_fake, alpha).backward()
        return x.grad

    # by hand: d = f_real - f_fake = 1.5x - 1, w = mean |x - 2x| = mean |x| per sample, P = 2 pixels, B = 2;
    # dL/dx = [(1 - α) 2d·1.5 + 1.5 (f_fake - x) + d (0.5 - 1)] / (P w B)
    d, ff = 1.5 * x0 - 1, 0.5 * x0 + 1
    w = x0.abs().flatten(1).mean(1).view(-1, 1, 1, 1)
    for alpha in (1.2, 0.5):
        want = ((1 - alpha) * 2 * d * 1.5 + 1.5 * (ff - x0) - 0.5 * d) / (2 * w * 2)
        assert torch.allclose(grads(alpha), want, atol=1e-6)
    assert not torch.allclose(grads(1.2), grads(1.0))  # the (1 - α) term moves the step
    # with the scores held constant the (1 - α) term has no gradient and the step is DMD's (f_fake - f_real) / (P w B)
    x = x0.clone().requires_grad_(True)
    generator_loss(x, 2.0 * x0, 0.5 * x0 + 1.0).backward()
    assert torch.allclose(grads(1.2, live=False), grads(0.3, live=False))
    assert torch.allclose(grads(1.2, live=False), x.grad, atol=1e-6)


def test_sid_and_dmd_students_differ_and_neither_touches_the_teacher(module_home):
    from t3unlearn.images.api import ensure_generator
    from t3unlearn.images.models import ImageGenerator
    from t3unlearn.images.sfd import SFDConfig, distill

    full = ensure_generator("ddpm", "full", preset="tiny", progress=False)
    teacher = ImageGenerator.load(full)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    sid, _ = distill(teacher, SFDConfig(steps=3, batch_size=4, lr=1e-3), progress=False)
    dmd, _ = distill(ImageGenerator.load(full), SFDConfig(steps=3, batch_size=4, lr=1e-3, gradient="dmd"), progress=False)
    assert all(torch.equal(v, teacher.model.state_dict()[k]) for k, v in before.items())
    a, b = sid.model.state_dict(), dmd.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(T3Error, match="sid .* or dmd"):
        SFDConfig(gradient="sds")
    assert "alpha" in SFDConfig().key() and "alpha" not in SFDConfig(gradient="dmd").key()


def test_forget_labels_get_the_safe_label():
    from t3unlearn.images.sfd import SFDConfig, target_labels

    y = torch.tensor([0, 1, 7, 3, 10])
    assert target_labels(y, (1, 7), 10).tolist() == [0, 10, 10, 3, 10]
    assert target_labels(y, (1,), 4).tolist() == [0, 4, 7, 3, 10]
    with pytest.raises(T3Error, match="safe_label must be"):
        SFDConfig(forget_labels=(1,), safe_label=1)
    with pytest.raises(T3Error, match="forget_labels must be digits"):
        SFDConfig(forget_labels=(12,))


def test_distilled_one_step_generator_is_cached_deterministic_and_samples_in_one_step(module_home):
    from t3unlearn.images.api import ensure_generator, sfd_cached
    from t3unlearn.images.models import ImageGenerator
    from t3unlearn.images.sampling import generate
    from t3unlearn.images.sfd import SFDConfig, distill

    full = ensure_generator("ddpm", "full", preset="tiny", progress=False)
    teacher = ImageGenerator.load(full)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    a, rec = distill(teacher, SFDConfig(steps=3, batch_size=4, lr=1e-3), progress=False)
    b, _ = distill(ImageGenerator.load(full), SFDConfig(steps=3, batch_size=4, lr=1e-3), progress=False)
    assert all(torch.equal(v, teacher.model.state_dict()[k]) for k, v in before.items())  # the teacher is frozen
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed, same student
    assert any(not torch.equal(sa[k], before[k]) for k in sa)  # and it did train
    assert a.meta["one_step"]["t_star"] == int(0.9 * teacher.scheduler.config.num_train_timesteps)
    assert rec["history"] and rec["trainable_params"] > 0
    # the cached unit: saved, loaded, and sampled with one network evaluation per image
    path, rec = sfd_cached("sfd_multi", preset="tiny", progress=False)
    gen = ImageGenerator.load(path)
    assert gen.meta["one_step"] and rec["params"]["forget_labels"] == [1, 7]
    calls = []
    gen.model.register_forward_hook(lambda *_: calls.append(1))
    x = generate(gen, [1, 2, 7], seed=4, steps=30)
    assert x.shape == (3, 1, 16, 16) and len(calls) == 1 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(x, generate(ImageGenerator.load(path), [1, 2, 7], seed=4))
    assert sfd_cached("sfd_multi", preset="tiny", progress=False)[0] == path  # reused, not made again


def test_sfd_refuses_a_vae(module_home, tmp_path, capsys):
    from t3unlearn.commands.main import main

    assert main(["images", "unlearn", "--preset", "tiny", "--model", "vae:full", "--method", "sfd", "--quiet",
                 "--out", str(tmp_path / "x")]) == 2
    assert "distils a DDPM" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
