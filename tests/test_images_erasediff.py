"""EraseDiff: its weight rule and forget target against hand computations, and the method on the tiny preset
(behaviour, not quality; quality is in docs/images.md)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_weight_is_zero_without_conflict_and_keeps_the_forget_descent_rate_with_one():
    from t3unlearn.images.erasediff import erasediff_weight

    g_retain = [torch.tensor([1.0, 0.0]), torch.tensor([0.0])]
    # ∇f = [1, 1 | 0]: the retain step already descends f (<g_F, ∇f> = 1 > η ||∇f||²): φ = max(η - 1/2, 0) = 0
    assert erasediff_weight(g_retain, [torch.tensor([-1.0, -1.0]), torch.tensor([0.0])], 1e-3) == 0.0
    # ∇f = [-1, 0 | 2]: conflict; φ = η - <g_F, ∇f>/||∇f||² = η + 1/5, and the combined step descends f at η ||∇f||²
    grad_f = [torch.tensor([-1.0, 0.0]), torch.tensor([2.0])]
    phi = erasediff_weight(g_retain, [-g for g in grad_f], 0.1)
    assert phi == pytest.approx(0.1 + 0.2)
    step = [gr + phi * gf for gr, gf in zip(g_retain, grad_f)]
    assert sum(float((s * gf).sum()) for s, gf in zip(step, grad_f)) == pytest.approx(0.1 * 5)
    assert erasediff_weight(g_retain, [torch.zeros(2), torch.zeros(1)], 0.1) == 0.0  # no forget gradient: no weight


def test_forget_target_is_uniform_noise_not_the_added_noise():
    from t3unlearn.images.erasediff import uniform_target_loss

    ab = torch.linspace(0.99, 0.01, 50)
    x0 = torch.zeros(400, 1, 4, 4)

    def half(m, t, y):
        return torch.full_like(m, 0.5)

    loss = uniform_target_loss(half, ab, x0, torch.zeros(400, dtype=torch.long), torch.Generator().manual_seed(0))
    # E (0.5 - u)² = 1/12 for u ~ U[0, 1); a Gaussian target would give 1.25
    assert float(loss.mean()) == pytest.approx(1 / 12, rel=0.05)
    again = uniform_target_loss(half, ab, x0, torch.zeros(400, dtype=torch.long), torch.Generator().manual_seed(0))
    assert torch.equal(loss, again)


@pytest.fixture(scope="module")
def tiny(module_home):
    from t3unlearn.images.api import ensure_generator
    from t3unlearn.images.data import ensure_benchmark
    from t3unlearn.images.models import ImageGenerator

    return ensure_benchmark("tiny"), ImageGenerator.load(ensure_generator("ddpm", "full", preset="tiny", progress=False))


def _denoising_loss(gen, x, y, seed: int, repeats: int = 20) -> float:
    from t3unlearn.images.objectives import Family

    fam, g = Family(gen, 0.0), torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return float(torch.stack([fam.plain_loss(x, y, g).mean() for _ in range(repeats)]).mean())


def test_erasediff_unlearns_the_forget_images_more_than_retain_finetuning_deterministically(tiny):
    from t3unlearn.images.trainer import unlearn

    bench, full = tiny
    cfg = {"steps": 20, "batch_size": 8, "lr": 1e-3, "seed": 0}
    a, rec = unlearn(full, bench, "erasediff", config=cfg, progress=False)
    b, _ = unlearn(full, bench, "erasediff", config=cfg, progress=False)
    naive, _ = unlearn(full, bench, "naive", config=cfg, progress=False)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed, same weights
    phis = [h["phi"] for h in rec["history"]]
    assert min(phis) >= 0 and max(phis) > 0  # the weight switches on when the two gradients conflict
    # the same retain fine-tuning with and without the forget term: the forget images' denoising loss (their
    # likelihood bound) ends higher with it, the retain images' stays close
    forget = lambda g: _denoising_loss(g, bench.forget, bench.forget_labels, 5)  # noqa: E731
    retain = lambda g: _denoising_loss(g, bench.retain[:200], bench.retain_labels[:200], 6, 5)  # noqa: E731
    assert forget(a) > forget(naive) + 0.05
    assert retain(a) < retain(naive) + 0.1


def test_erasediff_refuses_a_vae(module_home, tmp_path, capsys):
    from t3unlearn.commands.main import main

    assert main(["images", "unlearn", "--preset", "tiny", "--model", "vae:full", "--method", "erasediff", "--quiet",
                 "--out", str(tmp_path / "x")]) == 2
    assert "EraseDiff needs a DDPM" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
