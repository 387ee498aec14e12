"""The two image generators and how they are saved.

- **DDPM**: a class-conditional ``diffusers.UNet2DModel`` (ε-prediction; the class label is an
  embedding added to the time embedding, ``num_class_embeds``) with a ``diffusers.DDPMScheduler``
  (cosine ``squaredcos_cap_v2`` betas, 1,000 training steps). Samplers live in
  :mod:`t3unlearn.images.sampling`, apart from the model, as in diffusers.
- **VAE**: :class:`ConditionalVAE`, a small conditional VAE (MLP encoder ``q(z | x, y)``, MLP decoder
  ``p(x | z, y)`` with a Bernoulli likelihood on grey levels), a ``diffusers`` ``ModelMixin`` so it
  saves and loads the same way (``save_pretrained`` / ``from_pretrained``, safetensors).

Both take labels 0-9 and :data:`NULL_LABEL` (10), "no label". The DDPM is trained with label
dropout, so its null label generates from the whole training distribution (unconditional sampling
and classifier-free guidance); the VAE is trained without (its null-label samples would be blurry
blends), and samples unconditionally by drawing the label first.

A saved generator is a directory: ``unet/`` + ``scheduler/`` (DDPM) or ``vae/`` (VAE), each in
diffusers' own layout, plus ``t3_images.json`` (family, benchmark fingerprint, how it was made).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from t3unlearn.errors import ModelError

NUM_LABELS = 10
NULL_LABEL = 10  # "no label": unconditional generation
META_FILE = "t3_images.json"
# loads a saved T3 head over a base generator (a directory whose meta has "t3"): "module:function", imported by name
GUIDED_LOADER = "t3unlearn.images.t3:load_guided"
FAMILIES = ("ddpm", "vae")
# how every saved model is read: from the directory only (never the Hub), safetensors only (never a pickle)
LOCAL_SAFETENSORS = {"local_files_only": True, "use_safetensors": True}


@dataclass(frozen=True)
class DDPMArch:
    """The UNet and noise schedule (everything here enters the model cache fingerprint)."""

    block_out_channels: tuple = (16, 32, 32)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"


@dataclass(frozen=True)
class VAEArch:
    hidden: int = 256
    latent_dim: int = 16
    label_dim: int = 16


def make_unet(arch: DDPMArch, image_size: int = 16) -> UNet2DModel:
    levels = len(arch.block_out_channels)
    return UNet2DModel(
        sample_size=image_size,
        in_channels=1,
        out_channels=1,
        layers_per_block=arch.layers_per_block,
        block_out_channels=tuple(arch.block_out_channels),
        down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels,
        norm_num_groups=arch.norm_num_groups,
        num_class_embeds=NUM_LABELS + 1,
    )


def make_scheduler(arch: DDPMArch) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=arch.num_train_timesteps, beta_schedule=arch.beta_schedule,
                         prediction_type="epsilon", clip_sample=True)


def check_sampling_steps(steps: int, train_scheduler) -> None:
    """A ModelError unless ``1 <= steps <=`` the model's training timesteps (a sampler cannot take more)."""
    most = int(train_scheduler.config.num_train_timesteps)
    if not 1 <= steps <= most:
        raise ModelError(f"sampling steps must be between 1 and the model's {most} training timesteps, not {steps}.")


class ConditionalVAE(ModelMixin, ConfigMixin):
    """``q(z | x, y) = N(mu, diag sigma^2)``, ``p(z) = N(0, I)``, ``p(x | z, y) = Bernoulli(sigmoid(logits))``.

    Images are ``[B, 1, S, S]`` in [0, 1]; labels ``[B]`` in 0..10 (10 = no label).
    """

    @register_to_config
    def __init__(self, image_size: int = 16, hidden: int = 256, latent_dim: int = 16, label_dim: int = 16,
                 num_labels: int = NUM_LABELS + 1):
        super().__init__()
        d = image_size * image_size
        self.label_emb = nn.Embedding(num_labels, label_dim)
        self.encoder = nn.Sequential(nn.Linear(d + label_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.to_mu = nn.Linear(hidden, latent_dim)
        self.to_logvar = nn.Linear(hidden, latent_dim)
        self.decoder = nn.Sequential(nn.Linear(latent_dim + label_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                     nn.SiLU(), nn.Linear(hidden, d))

    def encode(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of ``q(z | x, y)``, each ``[B, latent_dim]``."""
        h = self.encoder(torch.cat([x.flatten(1), self.label_emb(labels)], 1))
        return self.to_mu(h), self.to_logvar(h).clamp(-12.0, 8.0)

    def decode(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits ``[B, 1, S, S]`` of ``p(x | z, y)``."""
        s = self.config.image_size
        return self.decoder(torch.cat([z, self.label_emb(labels)], 1)).view(-1, 1, s, s)


@dataclass
class ImageGenerator:
    """A trained generator: the model, its scheduler (DDPM) and what made it."""

    family: str
    model: Any  # UNet2DModel or ConditionalVAE
    scheduler: Any = None  # DDPMScheduler for the DDPM
    meta: dict = field(default_factory=dict)
    guidance: Any = None  # a T3ImageHead (t3unlearn.images.t3) over the frozen model, or None

    def save(self, path: str | Path, *, extra=None) -> Path:
        """Write the generator to ``path`` atomically (safetensors weights, JSON configs).

        ``extra(tmp_dir)``, if given, writes more files into the same directory before it is renamed
        into place (a run record, the inference network), so they appear together or not at all.
        """
        from t3unlearn.io import atomic_dir

        path = Path(path)
        with atomic_dir(path, marker=META_FILE, what="an image generator or T3 head") as tmp:
            if extra is not None:
                extra(tmp)
            if self.family == "ddpm":
                self.model.save_pretrained(tmp / "unet", safe_serialization=True)
                self.scheduler.save_pretrained(tmp / "scheduler")
            else:
                self.model.save_pretrained(tmp / "vae", safe_serialization=True)
            (tmp / META_FILE).write_text(json.dumps({"family": self.family, **self.meta}, indent=2) + "\n",
                                         encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ImageGenerator":
        path = Path(path)
        if not (path / META_FILE).is_file():
            raise ModelError(f"{path} is not a t3unlearn image generator (no {META_FILE}); train one with "
                             "'t3unlearn images train' or give the directory 'images unlearn --out' wrote.")
        try:
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path / META_FILE} is unreadable or not valid JSON ({str(exc).splitlines()[0]}); "
                             "the generator is corrupt: train or unlearn it again.") from None
        if not isinstance(meta, dict):
            raise ModelError(f"{path / META_FILE} must hold a JSON object; the generator is corrupt: train or unlearn it again.")
        family = meta.pop("family", None)
        if "t3" in meta:  # a T3 head over a base generator, saved the way an adapter is (t3 sits above this module)
            module, _, loader = GUIDED_LOADER.partition(":")
            return getattr(importlib.import_module(module), loader)(path, meta)
        missing = [d for d in {"ddpm": ("unet", "scheduler"), "vae": ("vae",)}.get(family, ()) if not (path / d).is_dir()]
        if missing:
            raise ModelError(f"{path} lacks {' and '.join(d + '/' for d in missing)}: the generator is incomplete; "
                             "train or unlearn it again.")
        try:
            if family == "ddpm":
                model = UNet2DModel.from_pretrained(str(path / "unet"), **LOCAL_SAFETENSORS)
                sched = DDPMScheduler.from_pretrained(str(path / "scheduler"), local_files_only=True)
            elif family == "vae":
                model, sched = ConditionalVAE.from_pretrained(str(path / "vae"), **LOCAL_SAFETENSORS), None
            else:
                raise ModelError(f"{path / META_FILE} names an unknown family {family!r}; expected ddpm or vae.")
        except (OSError, ValueError) as exc:
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"{path} has missing or corrupt weights ({str(exc).splitlines()[0]}); retrain it.") from None
        return cls(family, model.eval(), sched, meta)

    def copy(self) -> "ImageGenerator":
        import copy

        if self.guidance is not None:
            raise ModelError("a T3-guided generator is a frozen base plus a classifier; unlearn from its base instead.")
        return ImageGenerator(self.family, copy.deepcopy(self.model), self.scheduler, dict(self.meta))


def weights_fingerprint(path: str | Path) -> str:
    """A hash of a saved generator's weight and config files (not its run records, which hold times)."""
    import hashlib

    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.parent != path)
    if not files:
        raise ModelError(f"{path} holds no model files; retrain it.")
    for f in files:
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def new_generator(family: str, arch: DDPMArch | VAEArch | None = None, *, image_size: int = 16, seed: int = 0) -> ImageGenerator:
    """A freshly initialised generator (weights drawn from ``seed``)."""
    if family not in FAMILIES:
        raise ModelError(f"unknown generator family {family!r}; choose ddpm or vae.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if family == "ddpm":
            arch = arch or DDPMArch()
            return ImageGenerator("ddpm", make_unet(arch, image_size), make_scheduler(arch), {"arch": asdict(arch)})
        arch = arch or VAEArch()
        vae = ConditionalVAE(image_size=image_size, hidden=arch.hidden, latent_dim=arch.latent_dim, label_dim=arch.label_dim)
        return ImageGenerator("vae", vae, None, {"arch": asdict(arch)})
