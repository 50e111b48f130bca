"""Batch augmentation on the training device (``shared_components.transforms.batch``): each batched op against what
it must do (shapes, label values kept, exact flips, identity parameters giving the identity), the binary region
channels of a BraTS (``multilabel``) bundle staying binary, every patch's augmentation depending on (seed, epoch,
case) alone (not on the batch it lands in, nor on ``num_workers``), a bundle trained in ``batch`` mode through the
stock CLI, and the pipeline benchmark's JSON."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, list_data_collate

from shared_components.data import SeededSampler, make_dataset
from shared_components.training import registry
from shared_components.transforms import batch as B
from shared_components.transforms import train_transforms
from tests.helpers import HIPPO, run_cli, smoke_overrides, tiny_overrides

PATCH = [12, 16, 10]
REPO = Path(__file__).resolve().parents[1]


def _batch(n: int = 4, channels: int = 2, size=PATCH, seed: int = 0, label_channels: int = 1):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn((n, channels, *size), generator=g) * 2.0 + 1.0
    if label_channels == 1:
        label = torch.randint(0, 3, (n, 1, *size), generator=g).to(torch.uint8)
    else:
        label = (torch.rand((n, label_channels, *size), generator=g) > 0.5).float()
    return image, label


def _spatial(patch=PATCH, **kwargs) -> B.Spatial:
    return B.Spatial(patch_size=patch, **kwargs)


def _affine(matrix) -> dict:
    return {"matrix": np.asarray(matrix, dtype=float), "elastic": None}


# ---- each op -------------------------------------------------------------------------------------------------------


def test_mirror_flips_image_and_label_exactly():
    image, label = _batch()
    params = [(0,), None, (1, 2), (0, 1, 2)]
    out_i, out_l = B.Mirror(axes=(0, 1, 2))(image.clone(), label.clone(), params)
    for i, axes in enumerate(params):
        dims = [a + 1 for a in axes or ()]
        assert torch.equal(out_i[i], torch.flip(image[i], dims) if dims else image[i])
        assert torch.equal(out_l[i], torch.flip(label[i], dims) if dims else label[i])


def test_spatial_without_parameters_is_the_exact_centre_crop():
    image, label = _batch(size=[p + 4 for p in PATCH])
    out_i, out_l = _spatial()(image, label, [None] * 4)
    assert out_i.shape == (4, 2, *PATCH) and out_l.shape == (4, 1, *PATCH)
    assert torch.equal(out_i, image[:, :, 2:-2, 2:-2, 2:-2]) and torch.equal(out_l, label[:, :, 2:-2, 2:-2, 2:-2])


def test_spatial_identity_matrix_resamples_to_the_same_patch():
    image, label = _batch(size=[p + 6 for p in PATCH])
    crop = (slice(None), slice(None), slice(3, -3), slice(3, -3), slice(3, -3))
    out_i, out_l = _spatial()(image, label, [_affine(np.eye(3))] * 4)
    torch.testing.assert_close(out_i, image[crop], atol=1e-5, rtol=1e-5)
    assert torch.equal(out_l, label[crop]), "nearest-neighbour at the voxel centres keeps every label voxel"


def test_spatial_rotation_turns_the_voxel_grid():
    """A quarter turn about axis 0 of a cube is a permutation of voxels: labels exactly, image to rounding."""
    patch = [10, 10, 10]
    image, label = _batch(size=patch)
    out_i, out_l = _spatial(patch)(image, label, [_affine(B.rotation_matrix([math.pi / 2, 0, 0]))] * 4)
    turned = [torch.rot90(label, k, dims=(3, 4)) for k in (1, 3)]
    k = next(k for k, t in zip((1, 3), turned, strict=True) if torch.equal(out_l, t))
    torch.testing.assert_close(out_i, torch.rot90(image, k, dims=(3, 4)), atol=1e-4, rtol=0)


@pytest.mark.parametrize("matrix", [np.diag([0.6, 1.3, 1.0]), B.rotation_matrix([0.4, -0.3, 0.2]) * 1.2])
def test_spatial_keeps_label_values_and_moves_image_and_label_together(matrix):
    image, label = _batch(size=[p + 4 for p in PATCH], channels=1)
    image = label.float() * 10.0  # an image that is its label: after resampling they must still agree
    params = [_affine(matrix), None, _affine(matrix), None]
    out_i, out_l = _spatial()(image, label, params)
    assert set(out_l.unique().tolist()) <= {0, 1, 2} and out_l.dtype == torch.uint8
    inside = (out_i - out_l.float() * 10.0).abs() < 1e-3  # where bilinear lands on a voxel of one label
    assert inside.float().mean() > 0.3


def test_elastic_offsets_are_smooth_bounded_and_seeded():
    op = _spatial([16, 16, 16], p_elastic=1.0)
    sizes = [16, 16, 16]
    a = op.offsets(np.array([0.2] * 3), np.array([0.1] * 3), 7, sizes, torch.device("cpu"))
    b = op.offsets(np.array([0.2] * 3), np.array([0.1] * 3), 7, sizes, torch.device("cpu"))
    assert a.shape == (16, 16, 16, 3) and torch.equal(a, b)
    assert float(a.abs().amax()) <= 0.1 + 1e-6
    assert float((a[1:] - a[:-1]).abs().amax()) < 0.1, "neighbouring offsets differ little (smooth)"


def test_noise_blur_lowres_keep_shape_and_only_touch_drawn_patches():
    image, label = _batch(channels=1, size=[16, 16, 16])
    cases = [
        (B.GaussianNoise(prob=1.0), {"std": 0.5, "seed": 3}),
        (B.GaussianBlur(prob=1.0), {"channels": np.array([True]), "sigmas": np.array([[1.0, 0.5, 0.8]])}),
        (B.LowResolution(prob=1.0), {"channels": np.array([True]), "zoom": np.array([0.5])}),
    ]
    for op, p in cases:
        out, out_l = op(image.clone(), label.clone(), [p, None, p, None])
        assert out.shape == image.shape and torch.equal(out_l, label)
        assert torch.equal(out[1], image[1]) and torch.equal(out[3], image[3]), type(op).__name__
        assert not torch.equal(out[0], image[0])
        if isinstance(op, B.GaussianNoise):
            assert abs(float((out[0] - image[0]).std()) - 0.5) < 0.05
        else:  # smoothing lowers the variance of noise
            assert float(out[0].var()) < float(image[0].var())
    flat = torch.full((1, 1, 16, 16, 16), 3.0)
    for op, p in cases[1:]:
        torch.testing.assert_close(op(flat.clone(), None, [p])[0], flat, atol=1e-5, rtol=0)


def test_intensity_ops_do_what_they_say():
    image, _ = _batch(n=2, channels=2)
    out, _ = B.Brightness()(image.clone(), None, [np.array([2.0, 0.5]), None])
    assert torch.equal(out[0, 0], image[0, 0] * 2.0) and torch.equal(out[0, 1], image[0, 1] * 0.5)
    assert torch.equal(out[1], image[1])
    out, _ = B.Shift()(image.clone(), None, [None, np.array([0.25, 0.25])])
    assert torch.equal(out[1], image[1] + 0.25) and torch.equal(out[0], image[0])
    contrast = {"channels": np.array([True, True]), "factor": np.array([1.5, 0.5])}
    out, _ = B.Contrast(preserve_range=True)(image.clone(), None, [contrast, None])
    for c in range(2):
        assert abs(float(out[0, c].mean() - image[0, c].mean())) < 0.2
        assert out[0, c].min() >= image[0, c].min() and out[0, c].max() <= image[0, c].max()
    assert torch.equal(out[1], image[1])
    gamma = {"channels": np.array([True, True]), "gamma": np.array([0.7, 1.5])}
    for invert in (False, True):
        out, _ = B.Gamma(invert=invert, retain_stats=True)(image.clone(), None, [gamma, None])
        torch.testing.assert_close(out[0].mean((1, 2, 3)), image[0].mean((1, 2, 3)), atol=1e-4, rtol=0)
        torch.testing.assert_close(out[0].std((1, 2, 3)), image[0].std((1, 2, 3)), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(out[0], image[0]) and torch.equal(out[1], image[1])
    identity = {"channels": np.array([True, True]), "gamma": np.array([1.0, 1.0])}
    out, _ = B.Gamma(retain_stats=False)(image.clone(), None, [identity, identity])
    torch.testing.assert_close(out, image, atol=1e-5, rtol=1e-5)


def test_ops_that_draw_nothing_are_the_identity():
    """Every op of every preset with probability 0: the batch comes back bitwise unchanged (centre crop)."""
    aug = B.BatchAugmentation(PATCH, "nnunet", (0, 1, 2))
    for op in aug.ops:
        for name in ("prob", "p_rotation", "p_scaling", "p_elastic"):
            if hasattr(op, name):
                setattr(op, name, 0.0)
    image, label = _batch(size=aug.input_size)
    out_i, out_l = aug(image, label, range(4))
    m = aug.margin
    crop = (slice(None), slice(None), *(slice(k, k + p) for k, p in zip(m, PATCH, strict=True)))
    assert torch.equal(out_i, image[crop]) and torch.equal(out_l, label[crop])
    none = B.BatchAugmentation(PATCH, "none")
    assert none.input_size == PATCH and torch.equal(none(*_batch(), range(4))[0], _batch()[0])


@pytest.mark.parametrize("name", B.PRESETS)
def test_every_preset_gives_patches_with_their_label_values(name):
    aug = B.BatchAugmentation(PATCH, name, (0, 1, 2))
    assert all(m >= 0 for m in aug.margin) and aug.input_size == [
        p + 2 * m for p, m in zip(PATCH, aug.margin, strict=True)
    ]
    image, label = _batch(n=6, size=aug.input_size)
    source = (image.clone(), label.clone())
    out_i, out_l = aug(image, label, range(100, 106))
    assert out_i.shape == (6, 2, *PATCH) and out_l.shape == (6, 1, *PATCH) and out_l.dtype == torch.uint8
    assert set(out_l.unique().tolist()) <= {0, 1, 2} and torch.isfinite(out_i).all()
    assert torch.equal(image, source[0]) and torch.equal(label, source[1]), "the caller's batch is left alone"


def test_every_registered_preset_has_a_batch_form():
    assert set(registry.names("augmentation")) == set(B.PRESETS)
    with pytest.raises(ValueError, match="Unknown augmentation 'extreme'"):
        B.BatchAugmentation(PATCH, "extreme")
    with pytest.raises(ValueError, match="mode must be one of sample, batch"):
        train_transforms(PATCH, mode="gpu")


@pytest.mark.parametrize("name", ["strong", "nnunet"])
def test_multilabel_region_channels_stay_binary_and_move_alike(name):
    """BraTS-style sigmoid regions: three binary channels, resampled nearest-neighbour with one grid per patch."""
    aug = B.BatchAugmentation(PATCH, name, (0, 1, 2))
    image, _ = _batch(n=8, channels=4, size=aug.input_size)
    region = (torch.rand((8, 1, *aug.input_size), generator=torch.Generator().manual_seed(1)) > 0.6).float()
    label = torch.cat([region, region, region * 0], 1)  # TC == WT, ET empty: must stay so
    _, out = aug(image, label, range(8))
    assert out.shape == (8, 3, *PATCH) and set(out.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(out[:, 0], out[:, 1]) and not out[:, 2].any()


# ---- reproducible per (seed, epoch, case) ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", B.PRESETS)
def test_a_patch_is_augmented_alike_in_any_batch(name):
    aug = B.BatchAugmentation(PATCH, name, (0, 1, 2))
    image, label = _batch(n=6, size=aug.input_size)
    seeds = [11, 12, 13, 14, 15, 16]
    full = aug(image, label, seeds)
    for part in ([2], [0, 5], [4, 1, 3]):
        out = aug(image[part], label[part], [seeds[i] for i in part])
        assert torch.equal(out[0], full[0][part]) and torch.equal(out[1], full[1][part]), part
    other = aug(image, label, [s + 100 for s in seeds])
    assert name == "none" or not torch.equal(other[0], full[0])


def _write_case(root: Path, i: int, shape=(30, 34, 26)) -> dict[str, str]:
    rng = np.random.default_rng(i)
    label = np.zeros(shape, np.uint8)
    label[8:20, 10:24, 6:18] = 1
    label[12:16, 14:20, 9:14] = 2
    image = (rng.normal(100, 10, shape) * (1 + label)).astype(np.float32)
    paths = {}
    for key, array in (("image", image), ("label", label)):
        paths[key] = str(root / f"{key}_{i}.nii.gz")
        nib.save(nib.Nifti1Image(array, np.eye(4)), paths[key])
    return paths


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    root = tmp_path_factory.mktemp("batch_cases")
    return [_write_case(root, i) for i in range(6)]


def _loader_batches(cases, epoch: int, batch_size: int, num_workers: int, sampling: str = "label"):
    chain = train_transforms(PATCH, pixdim=None, sampling=sampling, num_samples=2, augmentation="nnunet", mode="batch")
    dataset = make_dataset(cases, chain, cache="memory", num_workers=1, seed=5)
    sampler = SeededSampler(dataset, seed=5)
    sampler.set_epoch(epoch)
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=list_data_collate
    )
    prepare = B.prepare_batch(PATCH, augmentation="nnunet", mode="batch")
    out = {}
    for batch in loader:
        image, label = prepare(batch, torch.device("cpu"))
        names = [Path(m).name for m in batch["image"].meta["filename_or_obj"]]
        for k, (name, seed) in enumerate(zip(names, batch[B.SEED_KEY].tolist(), strict=True)):
            out.setdefault(name, []).append((seed, image[k], label[k]))
    return out


def test_workers_and_batch_size_change_nothing(cases):
    """The same epoch with 0 or 2 worker processes and batches of 2 or 3 cases: every patch bitwise the same; the next
    epoch gives other patches."""
    reference = _loader_batches(cases, epoch=3, batch_size=2, num_workers=0)
    assert len(reference) == len(cases) and all(len(v) == 2 for v in reference.values())
    for batch_size, workers in ((2, 2), (3, 0)):
        other = _loader_batches(cases, epoch=3, batch_size=batch_size, num_workers=workers)
        for name, patches in reference.items():
            got = sorted(other[name], key=lambda p: p[0])
            for (s1, i1, l1), (s2, i2, l2) in zip(sorted(patches, key=lambda p: p[0]), got, strict=True):
                assert s1 == s2 and torch.equal(i1, i2) and torch.equal(l1, l2), (name, batch_size, workers)
    later = _loader_batches(cases, epoch=4, batch_size=2, num_workers=0)
    assert {s for v in later.values() for s, *_ in v}.isdisjoint({s for v in reference.values() for s, *_ in v})


def test_batch_mode_samples_patches_with_context(cases):
    chain = train_transforms(PATCH, pixdim=None, sampling="random", num_samples=1, augmentation="default", mode="batch")
    chain.set_random_state(seed=0)
    item = chain(cases[0])[0]
    aug = B.BatchAugmentation(PATCH, "default")
    assert list(item["image"].shape[1:]) == aug.input_size and B.SEED_KEY in item
    sample_mode = train_transforms(
        PATCH, pixdim=None, sampling="random", num_samples=1, augmentation="default", mode="sample"
    )
    assert list(sample_mode(cases[0])[0]["image"].shape[1:]) == PATCH


# ---- through the stock CLI, and the benchmark -----------------------------------------------------------------------


@pytest.mark.slow
def test_bundle_trains_one_epoch_in_batch_mode_through_the_cli(smoke_data, tmp_path: Path, one_thread):
    data = smoke_data("hippocampus_mri")
    overrides = smoke_overrides("unet", data, tmp_path) | {
        "augmentation_args#mode": "batch",
        "augmentation_args#augmentation": "nnunet",
        "tensorboard": False,
    }
    run_cli(HIPPO, ["configs/train.yaml"], overrides, tmp_path / "train.log")
    log = (tmp_path / "train.log").read_text()
    assert "epoch 1/1" in log and (tmp_path / "models" / "model.pt").is_file(), log[-3000:]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["signature"]["augmentation_args"]["mode"] == "batch"


@pytest.mark.slow
def test_batch_mode_resumes_to_bitwise_the_same_weights(bundles_dir: Path, hippo_dir: Path, tiny_hippo: Path, tmp_path):
    """Killed (-9) in its second epoch and resumed, a batch-mode run ends with the weights of an uninterrupted one: the
    augmentation seeds come from (seed, epoch, case), not from the state of any generator."""
    from tests.test_resume import _assert_same_training, _ok, _overrides, _run

    bundle = bundles_dir / HIPPO
    extra = {"augmentation_args#mode": "batch", "augmentation_args#augmentation": "nnunet", "progress": False}
    straight = tmp_path / "straight"
    _ok(_run(bundle, _overrides(hippo_dir, tiny_hippo, straight, **extra)))
    resumed = tmp_path / "resumed"
    ov = _overrides(hippo_dir, tiny_hippo, resumed, **extra)
    killed = _run(bundle, ov, hook="kill@iteration:2")
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    _ok(_run(bundle, ov | {"resume": True}))
    _assert_same_training(straight, resumed)


@pytest.mark.slow
def test_benchmark_script_writes_both_modes(tiny_hippo: Path, hippo_dir: Path, tmp_path: Path):
    out = tmp_path / "bench.json"
    tiny = {"batch_size": 1, "progress": False, "tensorboard": False, **tiny_overrides("unet")}
    cmd = [sys.executable, str(REPO / "scripts" / "benchmark_pipeline.py"), HIPPO, "--epochs", "1", "--warmup", "0"]
    cmd += ["--threads", "1", "--batches", "2", "--dataset_dir", str(hippo_dir), "--datalist", str(tiny_hippo)]
    cmd += ["--json", str(out), "--overrides", repr(tiny)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "batch/sample" in proc.stdout
    result = json.loads(out.read_text())
    assert {"bundle", "device", "threads", "amp", "batch_size", "patch_size", "modes", "batch_over_sample"} <= set(
        result
    )
    for mode in ("sample", "batch"):
        m = result["modes"][mode]
        keys = {"epoch_s", "compute_s", "data_wait_s", "augmentation_s", "handlers_s", "overhead_s", "peak_ram_mb"}
        assert keys | {"peak_vram_mb", "epoch_over_compute", "iterations", "epochs"} <= set(m), sorted(m)
        assert m["iterations"] == 3 and m["epoch_s"] > 0 and m["compute_s"] > 0
        assert m["peak_ram_mb"] > 0 and m["epoch_over_compute"] == pytest.approx(m["epoch_s"] / m["compute_s"])
