"""Bad input to the image job: one clear line, exit code 2, nothing touched or half-written.

Each case here was a traceback, a misleading message or lost data before it was fixed (audit of the
image side): ``--out`` naming a file or another program's directory, a corrupt ``t3_images.json``,
weights only as a pickle, SISS settings out of range, more sampling steps than the model has.
"""

from __future__ import annotations

import re

import pytest
import torch

from t3unlearn.errors import ModelError, T3Error

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_TINY = ["--preset", "tiny", "--quiet", "--threads", "1"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(r"t3unlearn images \w+: error: ", err[0]), err  # as argparse names the subcommand
    return err[0]


@pytest.mark.parametrize("argv", [
    ["build"],
    ["unlearn", "--method", "siss"],
    ["unlearn", "--method", "t3"],
    ["train", "--family", "vae", "--role", "full"],
    ["eval", "--model", "vae:full"],
    ["compare", "--families", "vae", "--methods", "naive", "--seeds", "1"],
    ["exactness", "--n", "100", "--steps", "2", "--models", "analytic"],
])
def test_out_that_is_a_file_is_refused_and_kept(argv, module_home, tmp_path, capsys):
    from t3unlearn.commands.main import main

    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    extra = ["--quiet"] if argv[0] == "exactness" else _TINY
    assert main(["images", *argv, *extra, "--out", str(target)]) == 2
    assert "is a file; give a directory" in _one_error_line(capsys)
    assert target.read_text() == "mine\n"  # was replaced by a directory (build, unlearn) or a traceback


@pytest.mark.parametrize("argv", [["build"], ["unlearn", "--method", "siss"], ["unlearn", "--method", "t3"]])
def test_out_that_is_another_directory_is_not_replaced(argv, module_home, tmp_path, capsys):
    from t3unlearn.commands.main import main

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.txt").write_text("keep me\n")
    assert main(["images", *argv, *_TINY, "--out", str(folder)]) == 2
    assert "non-empty directory" in _one_error_line(capsys)
    assert [p.name for p in folder.iterdir()] == ["holiday.txt"] and (folder / "holiday.txt").read_text() == "keep me\n"


def test_out_of_an_earlier_run_is_replaced(module_home, tmp_path, capsys):
    from t3unlearn.commands.main import main

    out = tmp_path / "bench"
    assert main(["images", "build", *_TINY, "--out", str(out)]) == 0
    assert main(["images", "build", *_TINY, "--out", str(out)]) == 0
    assert (out / "bench.json").is_file()


def test_generator_with_corrupt_meta_or_pickled_weights_is_refused(tmp_path):
    from t3unlearn.images.models import META_FILE, ImageGenerator, new_generator

    path = new_generator("vae").save(tmp_path / "v")
    meta = (path / META_FILE).read_text()
    (path / META_FILE).write_text('{"fam')
    with pytest.raises(ModelError, match="not valid JSON"):
        ImageGenerator.load(path)
    (path / META_FILE).write_text("[1, 2]")
    with pytest.raises(ModelError, match="JSON object"):
        ImageGenerator.load(path)
    (path / META_FILE).write_text(meta)
    # the weights only as a torch pickle: refused (no pickle is ever read), not loaded
    vae = ImageGenerator.load(path).model
    (path / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    vae.save_pretrained(path / "vae", safe_serialization=False)
    assert (path / "vae" / "diffusion_pytorch_model.bin").is_file()
    with pytest.raises(ModelError, match="missing or corrupt weights"):
        ImageGenerator.load(path)
    ddpm = new_generator("ddpm").save(tmp_path / "d")
    import shutil

    shutil.rmtree(ddpm / "unet")
    with pytest.raises(ModelError, match="lacks unet/"):
        ImageGenerator.load(ddpm)


@pytest.mark.parametrize("method, params, message", [
    ("siss", {"lambda": -0.5}, "lambda must be in \\[0, 1\\]"),
    ("siss", {"lambda": 1.5}, "lambda must be in \\[0, 1\\]"),
    ("siss", {"lambda": "abc"}, "lambda must be a number"),
    ("siss", {"lambda_end": 0}, "lambda_end must be in \\(0, 1\\]"),
    ("siss", {"lambda": 0, "lambda_end": 0.5}, "must then be > 0"),
    ("siss", {"superfactor": -1}, "superfactor must be >= 0"),
    ("adaptive_siss", {"prior_sigma": -1}, "prior_sigma must be > 0"),
    ("neggrad_plus", {"alpha": -1}, "alpha must be >= 0"),
    ("sfd_siss", {"lambda": 2}, "lambda must be in"),
    ("sfd_siss", {"pool_size": 0}, "pool_size must be a whole number >= 1"),
    ("adaptive_siss", {"hidden": 2.5}, "hidden must be a whole number >= 1"),
])
def test_method_settings_out_of_range(method, params, message):
    from t3unlearn.images.methods import get_method, resolve_params

    with pytest.raises(T3Error, match=message):
        resolve_params(get_method(method), params)


def test_method_settings_in_range_pass():
    from t3unlearn.images.methods import get_method, resolve_params

    assert resolve_params(get_method("siss"), {"lambda": 0})["lambda"] == 0  # SISS with λ = 0 (docs/images.md)
    assert resolve_params(get_method("siss"), {"lambda": 1, "lambda_end": 0.1})["lambda_end"] == 0.1
    assert resolve_params(get_method("sfd"), {})["alpha"] == 1.2  # SiD's α is not NegGrad+'s


def test_sampling_steps_beyond_the_schedule(capsys):
    from t3unlearn.images.models import DDPMArch, new_generator
    from t3unlearn.images.sampling import sample_ddpm
    from t3unlearn.images.t3 import ImageGuidance, sample_guided_diffusion

    gen = new_generator("ddpm", DDPMArch(block_out_channels=(8, 16), norm_num_groups=4, num_train_timesteps=20))
    labels = torch.tensor([0, 1])
    for steps in (0, 21):
        with pytest.raises(T3Error, match="between 1 and the model's 20 training timesteps"):
            sample_ddpm(gen.model, gen.scheduler, labels, generator=torch.Generator().manual_seed(0), steps=steps)
        with pytest.raises(T3Error, match="training timesteps"):
            sample_guided_diffusion(lambda x, t: torch.zeros_like(x), None, gen.scheduler, torch.zeros(2, 1, 16, 16),
                                    guidance=ImageGuidance(), steps=steps, generator=torch.Generator())
    assert sample_ddpm(gen.model, gen.scheduler, labels, generator=torch.Generator().manual_seed(0), steps=20).shape[0] == 2


@pytest.mark.parametrize("scale", ["-2", "nan"])
def test_eval_negative_guidance_scale(scale, module_home, capsys):
    from t3unlearn.commands.main import main

    assert main(["images", "eval", *_TINY, "--model", "ddpm:full", "--guidance-scale", scale]) == 2
    assert "--guidance-scale must be >= 0" in _one_error_line(capsys)


def test_eval_guidance_scale_on_a_vae_is_refused(module_home, tmp_path, capsys):
    """Classifier-free guidance is the DDPM's: a VAE sampled 'with' it was sampled without, silently."""
    from t3unlearn.commands.main import main
    from t3unlearn.images.models import new_generator

    vae = new_generator("vae").save(tmp_path / "vae")
    assert main(["images", "eval", *_TINY, "--model", str(vae), "--guidance-scale", "2"]) == 2
    assert "--guidance-scale is the DDPM's classifier-free guidance; a VAE samples without it" in _one_error_line(capsys)


def test_corrupt_benchmark_is_one_error_and_a_corrupt_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    from t3unlearn.errors import DataError
    from t3unlearn.images.data import ensure_benchmark, load_benchmark

    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    bench = ensure_benchmark("tiny")
    want = bench.train.clone()
    (bench.path / "bench.json").write_text('{"x')
    with pytest.raises(DataError, match="not valid JSON"):
        load_benchmark(bench.path)
    assert torch.equal(ensure_benchmark("tiny").train, want)  # was a JSONDecodeError traceback on every command
    (bench.path / "bench.json").write_text("[1]")
    with pytest.raises(DataError, match="not an image benchmark's description"):
        load_benchmark(bench.path)


@pytest.mark.parametrize("method", ["t3", "naive"])
def test_unlearn_out_is_not_the_model_itself(method, module_home, tmp_path, capsys):
    from t3unlearn.commands.main import main
    from t3unlearn.images.models import new_generator

    src = new_generator("vae").save(tmp_path / "mine")
    before = sorted(p.name for p in src.iterdir())
    assert main(["images", "unlearn", *_TINY, "--model", str(src), "--method", method, "--out", str(src)]) == 2
    assert "is the model being unlearned" in _one_error_line(capsys)
    assert sorted(p.name for p in src.iterdir()) == before  # t3 replaced the base by a head over itself


def test_a_loss_that_becomes_nan_is_one_error_without_a_warning(module_home):
    import dataclasses
    import warnings

    from t3unlearn.images.data import ensure_benchmark
    from t3unlearn.images.methods import Terms, get_method
    from t3unlearn.images.models import new_generator
    from t3unlearn.images.trainer import unlearn

    def nan_step(ctx, batch):
        x, y = batch["retain"]
        return Terms(ctx.family.plain_loss(x, y, ctx.generator).mean() * float("nan"), None)

    method = dataclasses.replace(get_method("naive"), compute=nan_step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float() of a tensor that needs grad warned, a second stderr line
        with pytest.raises(T3Error, match="the loss became nan at step 0"):
            unlearn(new_generator("vae"), ensure_benchmark("tiny"), method, config={"steps": 1, "batch_size": 2},
                    progress=False)
