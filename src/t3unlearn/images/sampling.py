"""Samplers, kept apart from the models as in diffusers: a model plus a scheduler (or a prior) in,
images in [0, 1] out.

- DDPM: the reverse process with a diffusers scheduler built from the trained
  ``DDPMScheduler``'s config: ``ddpm`` (ancestral, the default) or ``ddim`` (deterministic,
  eta = 0). On this benchmark's small UNet, 30 ancestral steps give far better digits than DDIM
  (classifier accuracy 0.95 vs 0.75 at 25-50 steps): the stochastic sampler corrects the
  model's errors, DDIM's deterministic path compounds them. ``guidance_scale > 1`` turns on classifier-free guidance against the null
  label; 1 (the default) is the plain conditional model.
- VAE: ``z ~ N(0, I)``, then the decoder's mean ``sigmoid(logits)``.
- A T3-guided generator (``gen.guidance`` set): the guided samplers of :mod:`t3unlearn.images.t3`.
- A one-step generator distilled by SFD (``gen.meta["one_step"]``): one x0-prediction from pure noise.

All randomness comes from the ``torch.Generator`` passed in, so the same seed gives the same images.
"""

from __future__ import annotations

import torch

from t3unlearn.errors import T3Error
from t3unlearn.images.models import NULL_LABEL, ImageGenerator, check_sampling_steps  # noqa: F401 - re-exported

SAMPLERS = ("ddpm", "ddim")


def make_sampler(train_scheduler, name: str = "ddpm"):
    """A diffusers scheduler for sampling, with the training schedule's betas."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if name == "ddim":
        return DDIMScheduler.from_config(train_scheduler.config)
    if name == "ddpm":
        return DDPMScheduler.from_config(train_scheduler.config)
    raise T3Error(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}.")


@torch.no_grad()
def sample_ddpm(unet, train_scheduler, labels: torch.Tensor, *, generator: torch.Generator, steps: int = 30,
                sampler: str = "ddpm", guidance_scale: float = 1.0, batch_size: int = 500, tick=None) -> torch.Tensor:
    """Images ``[N, 1, S, S]`` in [0, 1] for ``labels`` (``NULL_LABEL`` = unconditional)."""
    check_sampling_steps(steps, train_scheduler)
    sched = make_sampler(train_scheduler, sampler)
    sched.set_timesteps(steps)
    size = unet.config.sample_size
    unet.eval()
    out = []
    for start in range(0, len(labels), batch_size):
        y = labels[start : start + batch_size]
        x = torch.randn((len(y), 1, size, size), generator=generator)
        for t in sched.timesteps:
            if guidance_scale != 1.0:
                both = unet(torch.cat([x, x]), t, class_labels=torch.cat([y, torch.full_like(y, NULL_LABEL)])).sample
                cond, uncond = both.chunk(2)
                eps = uncond + guidance_scale * (cond - uncond)
            else:
                eps = unet(x, t, class_labels=y).sample
            x = sched.step(eps, t, x, generator=generator).prev_sample
            if tick is not None:
                tick(len(y) / len(labels) / len(sched.timesteps))
        out.append(((x.clamp(-1, 1) + 1) / 2))
    return torch.cat(out) if out else torch.zeros((0, 1, size, size))


@torch.no_grad()
def sample_vae(vae, labels: torch.Tensor, *, generator: torch.Generator, batch_size: int = 1000) -> torch.Tensor:
    """Decoder means ``[N, 1, S, S]`` in [0, 1] for ``labels`` with ``z ~ N(0, I)``."""
    vae.eval()
    out = []
    for start in range(0, len(labels), batch_size):
        y = labels[start : start + batch_size]
        z = torch.randn((len(y), vae.config.latent_dim), generator=generator)
        out.append(torch.sigmoid(vae.decode(z, y)))
    return torch.cat(out) if out else torch.zeros((0, 1, vae.config.image_size, vae.config.image_size))


def generate(gen: ImageGenerator, labels, *, seed: int = 0, steps: int = 30, sampler: str = "ddpm",
             guidance_scale: float = 1.0, tick=None) -> torch.Tensor:
    """Images in [0, 1] for ``labels`` (a list or tensor of 0-9, or 10 for unconditional), seeded."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.numel() and (labels.min() < 0 or labels.max() > NULL_LABEL):
        raise T3Error(f"labels must be digits 0-9 or {NULL_LABEL} (unconditional).")
    g = torch.Generator().manual_seed(seed)
    if gen.guidance is not None:  # T3: the frozen generator guided by its classifier
        from t3unlearn.images.t3 import ddpm_sample_t3, vae_sample_t3

        if gen.family == "ddpm":
            return ddpm_sample_t3(gen.model, gen.scheduler, gen.guidance, labels, generator=g, steps=steps, tick=tick)
        out = vae_sample_t3(gen.model, gen.guidance, labels, generator=g)
        if tick is not None:
            tick(1.0)
        return out
    if gen.meta.get("one_step"):  # a one-step generator distilled by SFD (t3unlearn.images.sfd)
        from t3unlearn.images.sfd import one_step_sample

        out = one_step_sample(gen.model, gen.scheduler, labels, int(gen.meta["one_step"]["t_star"]), generator=g)
        if tick is not None:
            tick(1.0)
        return out
    if gen.family == "ddpm":
        return sample_ddpm(gen.model, gen.scheduler, labels, generator=g, steps=steps, sampler=sampler,
                           guidance_scale=guidance_scale, tick=tick)
    out = sample_vae(gen.model, labels, generator=g)
    if tick is not None:
        tick(1.0)
    return out
