"""Presets: every size and setting of the image job in one place.

``default``: the benchmark of :mod:`t3unlearn.images.data` (4,545 training images at 16x16),
a 0.27M-parameter UNet trained 1,000 steps (batch 64) and a 0.3M-parameter conditional VAE, so
the full and oracle models of both families train in a few minutes on 2 CPU cores; unlearning
runs are 1-3 minutes each. ``tiny``: the test-sized version (seconds).

The unlearning settings (learning rates, steps, superfactor, NegGrad's ``alpha``) were chosen on
seed 0 of the default preset (by hand; ``docs/images.md``); any of them can be
overridden per run (``t3unlearn images unlearn --set key=value --steps N --lr X``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from t3unlearn.errors import T3Error
from t3unlearn.images.guidance import family_params
from t3unlearn.images.models import DDPMArch, VAEArch


@dataclass(frozen=True)
class ImagePreset:
    name: str
    bench: str
    ddpm_arch: DDPMArch
    ddpm_train: dict
    vae_arch: VAEArch
    vae_train: dict
    classifier: dict
    eval: dict
    unlearn: dict = field(default_factory=dict)  # family -> method -> {"config": {...}, "params": {...}}

    def arch(self, family: str):
        return self.ddpm_arch if family == "ddpm" else self.vae_arch

    def train_config(self, family: str) -> dict:
        return dict(self.ddpm_train if family == "ddpm" else self.vae_train)

    def unlearn_settings(self, family: str, method: str) -> tuple[dict, dict]:
        """``(config, params)`` of ``method`` on ``family`` (empty dicts: the trainer's defaults)."""
        s = self.unlearn.get(family, {}).get(method, {})
        return dict(s.get("config", {})), dict(s.get("params", {}))


_DEFAULT_UNLEARN = {
    # set by hand on seed 0 of the default preset (docs/images.md, "Methods"); SISS and Adaptive-λ SISS
    # share every setting, so the table compares static and adaptive λ and nothing else
    "ddpm": {
        "naive": {"config": {"steps": 150, "batch_size": 32, "lr": 2e-4}},
        "neggrad": {"config": {"steps": 20, "batch_size": 32, "lr": 5e-6}},
        "neggrad_plus": {"config": {"steps": 150, "batch_size": 32, "lr": 1e-4}, "params": {"alpha": 0.05}},
        "siss": {"config": {"steps": 150, "batch_size": 32, "lr": 5e-5}, "params": {"superfactor": 100.0}},
        "siss_no_is": {"config": {"steps": 150, "batch_size": 32, "lr": 5e-5}, "params": {"superfactor": 100.0}},
        "adaptive_siss": {"config": {"steps": 150, "batch_size": 32, "lr": 5e-5}, "params": {"superfactor": 100.0}},
        # EraseDiff: SISS's steps and batch; the learning rate and the total-gradient clip (1, as SISS's code
        # clips every method) chosen on tuning seed 0, which no reported row uses (docs/images.md)
        "erasediff": {"config": {"steps": 150, "batch_size": 32, "lr": 5e-5, "max_grad_norm": 1.0}},
        # T3: the classifier's training (the generator is frozen); guidance settings: the method's defaults
        "t3": {"config": {"steps": 1500, "batch_size": 64, "lr": 2e-3}},
        "cg": {"config": {"steps": 1500, "batch_size": 64, "lr": 2e-3}},
        "sfd": {"config": {"steps": 1000, "batch_size": 32, "lr": 2e-5}},
        "sfd_multi": {"config": {"steps": 1000, "batch_size": 32, "lr": 2e-5}},
        "sfd_multi_adaptive": {"config": {"steps": 1000, "batch_size": 32, "lr": 2e-5}},
        # the hybrid and the RL formulation share SISS's settings, so their rows differ from SISS only in
        # the SFD term and in who picks λ
        "sfd_siss": {"config": {"steps": 150, "batch_size": 32, "lr": 5e-5}, "params": {"superfactor": 100.0}},
        "rl_siss": {"config": {"steps": 150, "batch_size": 32, "lr": 5e-5}, "params": {"superfactor": 100.0}},
    },
    "vae": {
        "naive": {"config": {"steps": 800, "batch_size": 64, "lr": 1e-3}},
        "neggrad": {"config": {"steps": 30, "batch_size": 64, "lr": 3e-5}},
        "neggrad_plus": {"config": {"steps": 400, "batch_size": 64, "lr": 5e-4}, "params": {"alpha": 0.002}},
        "siss": {"config": {"steps": 400, "batch_size": 64, "lr": 1e-3}, "params": {"superfactor": 100.0}},
        "siss_no_is": {"config": {"steps": 400, "batch_size": 64, "lr": 1e-3}, "params": {"superfactor": 100.0}},
        "adaptive_siss": {"config": {"steps": 400, "batch_size": 64, "lr": 1e-3}, "params": {"superfactor": 100.0}},
        # the policy's learning rate: 1e-2 (the DDPM's) swung λ between 0 and 1 over the VAE's 40 decisions and
        # cost retain quality on seed 0 (ELBO retain -45.3, accuracy 0.938); 1e-3 did not (docs/images.md)
        "rl_siss": {"config": {"steps": 400, "batch_size": 64, "lr": 1e-3},
                    "params": {"superfactor": 100.0, "policy_lr": 1e-3}},
        # the VAE's guidance: t3unlearn.images.guidance's defaults table
        "t3": {"config": {"steps": 1500, "batch_size": 128, "lr": 2e-3}, "params": family_params("t3", "vae")},
        "cg": {"config": {"steps": 1500, "batch_size": 128, "lr": 2e-3}, "params": family_params("cg", "vae")},
    },
}

PRESETS: dict[str, ImagePreset] = {
    "default": ImagePreset(
        name="default",
        bench="default",
        ddpm_arch=DDPMArch(),
        ddpm_train={"steps": 1000, "batch_size": 64, "lr": 2e-3, "warmup": 100},
        vae_arch=VAEArch(),
        vae_train={"steps": 2500, "batch_size": 128, "lr": 1e-3, "warmup": 100, "label_dropout": 0.0},
        classifier={"steps": 800},
        eval={"per_label": 50, "forget_label_extra": 250, "unconditional": 500, "steps": 30, "sampler": "ddpm"},
        unlearn=_DEFAULT_UNLEARN,
    ),
    "tiny": ImagePreset(
        name="tiny",
        bench="tiny",
        ddpm_arch=DDPMArch(block_out_channels=(8, 16), norm_num_groups=4, num_train_timesteps=100),
        ddpm_train={"steps": 8, "batch_size": 16, "lr": 2e-3, "warmup": 2},
        vae_arch=VAEArch(hidden=32, latent_dim=4, label_dim=4),
        vae_train={"steps": 20, "batch_size": 32, "lr": 1e-3, "warmup": 2, "label_dropout": 0.0},
        classifier={"steps": 30, "batch_size": 32},
        eval={"per_label": 3, "forget_label_extra": 3, "unconditional": 6, "steps": 4, "sampler": "ddpm", "elbo_samples": 2},
        unlearn={fam: {m: {"config": {"steps": 3, "batch_size": 8, "lr": 1e-3}, "params": dict(s.get("params", {}))}
                       for m, s in ms.items()} for fam, ms in _DEFAULT_UNLEARN.items()},
    ),
}


def get_preset(name: str | ImagePreset) -> ImagePreset:
    if isinstance(name, ImagePreset):
        return name
    if name not in PRESETS:
        raise T3Error(f"unknown image preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]
