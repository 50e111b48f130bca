"""The transform chains of ``shared_components.transforms`` on small synthetic NIfTI cases: shapes, dtypes and
geometry, label values kept by nearest-neighbour resampling, patch sampling, post-processing back to the input's
original geometry, and the BraTS region conversion in both directions."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from shared_components.transforms import (
    LabelToRegionsd,
    RegionsToLabeld,
    TakeFirstOutputd,
    infer_transforms,
    post_transforms,
    train_transforms,
    val_transforms,
)

SHAPE = (24, 20, 12)
SPACING = (1.5, 1.0, 2.5)  # anisotropic, so resampling to 1 mm changes every axis differently
LABELS = (0, 1, 2)
BRATS_LABELS = (0, 1, 2, 4)  # necrosis, oedema, enhancing (3, non-enhancing, only in BraTS 2013-2015)
BRATS_REGIONS = {"TC": [1, 3, 4], "WT": [1, 2, 3, 4], "ET": [4]}


def _label_map(values: tuple[int, ...]) -> np.ndarray:
    """Nested blocks, the outermost first: each value covers a large enough block to survive resampling."""
    label = np.zeros(SHAPE, np.uint8)
    for i, v in enumerate(values[1:]):
        m = 2 + 2 * i
        label[m : SHAPE[0] - m, m : SHAPE[1] - m, 1 + i : SHAPE[2] - 1 - i] = v
    return label


def _write(path: Path, array: np.ndarray, spacing: tuple[float, ...] = SPACING) -> str:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 2.0)
    nib.save(nib.Nifti1Image(array, affine), path)
    return str(path)


@pytest.fixture
def case(tmp_path: Path) -> dict[str, str]:
    """A one-channel image (noise plus structure, zero background) and its label map 0/1/2."""
    label = _label_map(LABELS)
    rng = np.random.default_rng(0)
    image = (100.0 + 20.0 * label + rng.normal(0.0, 5.0, SHAPE)).astype(np.float32) * (label > 0)
    return {"image": _write(tmp_path / "img.nii.gz", image), "label": _write(tmp_path / "lab.nii.gz", label)}


@pytest.fixture
def brats_case(tmp_path: Path) -> dict[str, str | list[str]]:
    """A two-channel image (two files, as BraTS modalities) and a BraTS label map 0/1/2/4."""
    label = _label_map(BRATS_LABELS)
    rng = np.random.default_rng(1)
    images = [_write(tmp_path / f"mod{c}.nii.gz", rng.normal(c, 1.0, SHAPE).astype(np.float32)) for c in (0, 1)]
    return {"image": images, "label": _write(tmp_path / "seg.nii.gz", label)}


def _values(t: torch.Tensor) -> set[int]:
    assert torch.equal(t, t.round()), "label values are not integers"
    return set(t.unique().int().tolist())


# ---- validation and inference chains -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["case", "brats_case"])
def test_val_transforms_resample_with_labels_kept(name: str, request: pytest.FixtureRequest):
    """Resampled to 1 mm, image and label share a grid and the label keeps exactly its values: in the BraTS map,
    any interpolation but nearest-neighbour would also write 3 between oedema (2) and enhancing tumour (4)."""
    case = request.getfixturevalue(name)
    out = val_transforms(pixdim=(1.0, 1.0, 1.0), orientation="RAS", intensity="zscore")(case)
    image, label = out["image"], out["label"]
    expected = [(n - 1) * s + 1 for n, s in zip(SHAPE, SPACING, strict=True)]  # voxel centres span the same mm
    assert image.dtype == torch.float32 and label.dtype == torch.uint8
    assert image.shape[0] == (1 if name == "case" else 2) and label.shape == (1, *image.shape[1:])
    assert all(abs(a - b) <= 1 for a, b in zip(image.shape[1:], expected, strict=True)), (image.shape, expected)
    np.testing.assert_allclose(np.linalg.norm(image.affine[:3, :3].numpy(), axis=0), [1.0, 1.0, 1.0], atol=1e-6)
    assert torch.equal(image.affine, label.affine), "image and label no longer share a grid"
    assert _values(label) == set(LABELS if name == "case" else BRATS_LABELS), "label values changed"


def test_val_transforms_zscore_the_foreground_without_resampling(case: dict[str, str]):
    out = val_transforms(pixdim=None, intensity="zscore")(case)
    label = torch.as_tensor(nib.load(case["label"]).get_fdata())
    assert out["image"].shape == (1, *SHAPE)
    assert torch.equal(out["label"][0].to(torch.float64), label), "without resampling the label is unchanged"
    fg = out["image"][0][label > 0]
    assert abs(float(fg.mean())) < 1e-3 and abs(float(fg.std()) - 1.0) < 1e-2
    assert torch.all(out["image"][0][label == 0] == 0), "the zero background stays zero (non-zero z-score)"


def test_ct_window_scales_to_unit_range(case: dict[str, str]):
    out = val_transforms(pixdim=None, intensity={"kind": "ct", "a_min": 90, "a_max": 130})(case)
    assert float(out["image"].min()) == 0.0 and float(out["image"].max()) == 1.0


def test_infer_transforms_preprocess_the_image_like_validation(brats_case: dict[str, str | list[str]]):
    """Inference needs no label (``label_map`` and ``regions`` are ignored) and gives the validation image."""
    args = {"pixdim": (2.0, 2.0, 2.0), "intensity": "zscore", "regions": BRATS_REGIONS, "label_map": {4: 1}}
    infer = infer_transforms(**args)({"image": brats_case["image"]})
    val = val_transforms(**args)(brats_case)
    assert "label" not in infer and infer["image"].shape[0] == 2, "the two modality files are stacked as channels"
    torch.testing.assert_close(infer["image"].as_tensor(), val["image"].as_tensor())


# ---- training chain ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("augmentation", ["none", "strong"])
def test_train_transforms_sample_foreground_patches(brats_case: dict[str, str | list[str]], augmentation: str):
    """Patches of the patch size (padded where the image is smaller), centred on the foreground for
    ``pos_neg=(1, 0)``, with the label map's values kept by the spatial augmentations (no 3 between 2 and 4)."""
    patch = [16, 16, 16]  # larger than the image along its last axis
    chain = train_transforms(
        patch,
        pixdim=None,
        sampling="label",
        num_samples=3,
        pos_neg=(1.0, 0.0),
        augmentation=augmentation,
        mode="sample",
    )
    chain.set_random_state(seed=0)
    samples = chain(brats_case)
    assert isinstance(samples, list) and len(samples) == 3
    for s in samples:
        assert s["image"].shape == (2, *patch) and s["label"].shape == (1, *patch)
        assert s["image"].dtype == torch.float32
        values = _values(s["label"])
        assert values <= set(BRATS_LABELS), f"label values changed: {values}"
        assert values - {0}, "pos_neg=(1, 0) centres every patch on the foreground"


def test_train_transforms_reject_unknown_options():
    with pytest.raises(ValueError, match="sampling"):
        train_transforms([16, 16, 16], sampling="grid")
    with pytest.raises(ValueError, match="augmentation"):
        train_transforms([16, 16, 16], augmentation="extreme")


# ---- BraTS regions -----------------------------------------------------------------------------------------------


def test_brats_regions_round_trip():
    label = torch.as_tensor(_label_map(BRATS_LABELS))[None]
    regions = LabelToRegionsd("label", BRATS_REGIONS)({"label": label})["label"]
    assert regions.shape == (3, *SHAPE) and regions.dtype == torch.float32
    for channel, values in zip(regions, BRATS_REGIONS.values(), strict=True):
        assert torch.equal(channel.bool(), torch.isin(label[0], torch.tensor(values)))
    back = RegionsToLabeld.from_regions("label", BRATS_REGIONS)({"label": regions})["label"]
    assert back.dtype == torch.uint8 and torch.equal(back, label.to(torch.uint8)), "regions must paint back the labels"


def test_brats_2015_non_enhancing_label_paints_back_as_necrosis():
    """Label 3 is in TC and WT exactly like label 1: the regions cannot tell them apart, so it comes back as 1."""
    label = torch.tensor([0, 1, 2, 3, 4]).reshape(1, 5, 1, 1)
    regions = LabelToRegionsd("label", BRATS_REGIONS)({"label": label})["label"]
    back = RegionsToLabeld.from_regions("label", BRATS_REGIONS)({"label": regions})["label"]
    assert back.flatten().tolist() == [0, 1, 2, 1, 4]


def test_val_transforms_give_regions_on_the_image_grid(brats_case: dict[str, str | list[str]]):
    out = val_transforms(pixdim=(2.0, 2.0, 2.0), intensity="zscore", regions=BRATS_REGIONS)(brats_case)
    assert out["image"].shape[0] == 2 and out["label"].shape == (3, *out["image"].shape[1:])
    assert _values(out["label"]) == {0, 1}
    tc, wt, et = out["label"].bool()
    assert torch.all(wt | ~tc) and torch.all(tc | ~et), "nested regions: ET within TC within WT"


# ---- post-processing ---------------------------------------------------------------------------------------------


def test_metrics_post_transforms_one_hot_from_deep_supervision():
    logits = torch.randn(3, 3, 8, 8, 8, generator=torch.Generator().manual_seed(0))  # [heads, C, ...]
    label = torch.randint(0, 3, (1, 8, 8, 8))
    out = post_transforms("metrics", num_classes=3)({"pred": logits, "label": label})
    assert out["pred"].shape == out["label"].shape == (3, 8, 8, 8)
    assert torch.equal(out["pred"].argmax(0), logits[0].argmax(0)), "the full-resolution head, one-hot"
    assert torch.equal(out["label"].argmax(0), label[0]) and torch.all(out["label"].sum(0) == 1)
    multi = post_transforms("metrics", num_classes=3, multilabel=True)({"pred": logits[0], "label": label})
    assert torch.equal(multi["pred"], (logits[0] > 0).float()), "sigmoid > 0.5, channels independent"


def test_take_first_output_only_unstacks_deep_supervision():
    single = torch.zeros(3, 4, 4, 4)
    assert TakeFirstOutputd("pred")({"pred": single})["pred"] is single
    assert TakeFirstOutputd("pred")({"pred": torch.zeros(2, 3, 4, 4, 4)})["pred"].shape == single.shape


def _perfect_logits(one_hot: torch.Tensor, like: MetaTensor) -> MetaTensor:
    """Network output that predicts ``one_hot`` on the preprocessed grid of ``like``."""
    return MetaTensor(10.0 * (2.0 * one_hot.float() - 1.0), meta=like.meta)


def test_save_post_transforms_write_labels_in_the_original_geometry(case: dict[str, str], tmp_path: Path):
    args = {"pixdim": (1.0, 1.0, 1.0), "orientation": "LPS", "intensity": "zscore"}
    prep = infer_transforms(**args)
    data = prep({"image": case["image"]})
    resampled_label = val_transforms(**args)(case)["label"]
    one_hot = torch.cat([resampled_label == c for c in LABELS])
    data["pred"] = _perfect_logits(one_hot, data["image"])
    post_transforms("save", num_classes=3, preprocessing=prep, output_dir=str(tmp_path / "pred"))(data)
    saved = sorted((tmp_path / "pred").glob("*.nii.gz"))
    assert [p.name for p in saved] == ["img_seg.nii.gz"]
    pred, source = nib.load(saved[0]), nib.load(case["label"])
    assert pred.shape == source.shape and np.allclose(pred.affine, source.affine, atol=1e-4)
    assert pred.get_data_dtype() == np.uint8
    values, truth = np.asarray(pred.dataobj), np.asarray(source.dataobj)
    assert set(np.unique(values).tolist()) <= set(LABELS)
    assert (values == truth).mean() > 0.95, "resampled there and back, the prediction still matches the label"


def test_save_post_transforms_paint_regions_back_as_brats_labels(brats_case: dict[str, str | list[str]], tmp_path):
    args = {"pixdim": None, "intensity": "zscore", "regions": BRATS_REGIONS}
    prep = infer_transforms(**args)
    data = prep({"image": brats_case["image"]})
    data["pred"] = _perfect_logits(val_transforms(**args)(brats_case)["label"], data["image"])
    post = post_transforms("save", 3, True, prep, str(tmp_path / "pred"), regions=BRATS_REGIONS)
    post(data)
    (saved,) = (tmp_path / "pred").glob("*.nii.gz")
    assert np.array_equal(np.asarray(nib.load(saved).dataobj), np.asarray(nib.load(brats_case["label"]).dataobj))


def test_post_transforms_reject_unknown_stage_and_missing_inputs():
    with pytest.raises(ValueError, match="stage"):
        post_transforms("train", num_classes=2)
    with pytest.raises(ValueError, match="output_dir"):
        post_transforms("save", num_classes=2)


def test_spacing_runs_with_monai_label_request_keys():
    """MONAI Label adds ``image_path`` (a string) to the data; MONAI's Spacingd takes it for the image's metadata
    dict and fails, the chains' Spacingd resamples and keeps it."""
    from monai.transforms import Spacingd as MonaiSpacingd

    from shared_components.transforms.spacing import Spacingd

    def request() -> dict:
        affine = torch.diag(torch.tensor([0.4, 0.4, 0.6, 1.0]))
        image = MetaTensor(torch.rand(1, 20, 20, 10), affine=affine, meta={"filename_or_obj": "case.nii.gz"})
        return {"image": image, "image_path": "/studies/case.nii.gz"}

    with pytest.raises(AttributeError, match="update"):
        MonaiSpacingd("image", pixdim=(0.8, 0.8, 1.2))(request())
    out = Spacingd("image", pixdim=(0.8, 0.8, 1.2))(request())
    assert out["image"].pixdim.tolist() == pytest.approx([0.8, 0.8, 1.2])
    assert out["image_path"] == "/studies/case.nii.gz"
