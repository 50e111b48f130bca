"""The synthetic phantoms are realistic where converters and bundles depend on it: CT in Hounsfield units with
organs in their anatomical places (in world space, whatever the stored orientation), brain-tumour MRI with nested
regions and channel-dependent contrast, and multi-centre amygdala data whose centres really differ."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from shared_components.data import synthetic as S
from shared_components.data.synthetic.mri import EDEMA, ENHANCING, NECROSIS, WM


def _world_centroid(img: nib.Nifti1Image, mask: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask).mean(axis=0)
    return nib.affines.apply_affine(img.affine, ijk)


def test_ct_phantom_hounsfield_units():
    rng = np.random.default_rng(3)
    image, masks, spacing = S.abdomen_ct_phantom(rng, (6.0, 6.0, 5.0), n_tumours=2)
    assert image.dtype == np.int16 and min(image.shape) >= 30 and max(image.shape) <= 64
    assert np.median(image[0]) == pytest.approx(-1000, abs=30)  # air beside the body
    mean = {k: float(image[m].mean()) for k, m in masks.items() if m.any()}
    assert 50 <= mean["liver"] <= 130 and 40 <= mean["spleen"] <= 140 and 25 <= mean["pancreas"] <= 120
    assert mean["liver_tumour"] < mean["liver"] - 20  # hypodense lesions
    assert (image > 400).sum() > 50 and (image < -800).sum() > 1000  # bone, lung bases and gas
    body = image > -500
    assert -150 < np.percentile(image[body], 10) < 0  # plenty of fat
    # anatomy in RAS world coordinates (grid centred on 0): liver on the patient's right, spleen left
    x = (np.arange(image.shape[0]) - (image.shape[0] - 1) / 2) * spacing[0]
    assert x[np.argwhere(masks["liver"])[:, 0]].mean() < -20 < 20 < x[np.argwhere(masks["spleen"])[:, 0]].mean()


def test_stored_orientation_keeps_anatomy(tmp_path):
    """MSD CT phantoms are stored LPS-ordered; the affine must still put the spleen on the patient's left."""
    root = S.write_msd_spleen(tmp_path / "Task09_Spleen", n_train=1, n_test=0)
    img = nib.load(root / "imagesTr" / "spleen_1.nii.gz")
    lbl = nib.load(root / "labelsTr" / "spleen_1.nii.gz")
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S") and np.allclose(img.affine, lbl.affine)
    assert _world_centroid(lbl, np.asarray(lbl.dataobj) == 1)[0] > 40  # +x = patient's left
    assert img.get_data_dtype() == np.int16 and img.header.get_zooms()[2] in (4.0, 5.0, 5.5)


def test_brain_tumour_phantom_nested_regions_and_contrast():
    image, tissue = S.brain_tumour_phantom(np.random.default_rng(1))
    flair, t1, t1ce, t2 = image
    assert image.shape[0] == 4 and (image[:, tissue == 0] == 0).all()  # skull-stripped background
    necrosis, enhancing, edema = (tissue == NECROSIS), (tissue == ENHANCING), (tissue == EDEMA)
    assert necrosis.sum() > 10 and enhancing.sum() > 10 and edema.sum() > enhancing.sum()
    # nesting: the core is closer to the tumour centre than the rim, which is inside the oedema
    centre = np.argwhere(necrosis | enhancing).mean(axis=0)
    dist = {k: np.linalg.norm(np.argwhere(m) - centre, axis=1).mean() for k, m in
            {"necrosis": necrosis, "enhancing": enhancing, "edema": edema}.items()}  # fmt: skip
    assert dist["necrosis"] < dist["enhancing"] < dist["edema"]
    m = lambda ch, mask: float(ch[mask].mean())  # noqa: E731
    assert m(flair, edema) > 1.5 * m(flair, tissue == WM)  # oedema bright on FLAIR
    assert m(t1ce, enhancing) > 1.5 * m(t1, enhancing) / 1100 * 1400  # the rim enhances with gadolinium
    assert m(t2, necrosis) > m(t2, tissue == WM) * 1.8  # necrosis bright on T2
    assert m(t1, tissue == WM) > m(t1, edema)  # oedema dark on T1


def test_brats_label_conventions(tmp_path):
    S.write_brats(tmp_path / "brats", n=1)
    S.write_msd_brain_tumour(tmp_path / "msd", n_train=1, n_test=0)
    brats = np.asarray(nib.load(tmp_path / "brats/BraTS2021_00000/BraTS2021_00000_seg.nii.gz").dataobj)
    msd = np.asarray(nib.load(tmp_path / "msd/labelsTr/BRATS_001.nii.gz").dataobj)
    assert set(np.unique(brats)) == {0, 1, 2, 4} and set(np.unique(msd)) == {0, 1, 2, 3}
    vol = nib.load(tmp_path / "msd/imagesTr/BRATS_001.nii.gz")
    assert vol.ndim == 4 and vol.shape[3] == 4 and vol.get_data_dtype() == np.float32


def test_amygdala_centres_differ(tmp_path):
    root = S.write_amygdala_folders(tmp_path / "amy", n_per_centre=1)
    found = {}
    for centre in ("centre_a", "centre_b", "centre_c"):
        img = nib.load(root / "images" / centre / f"sub-{'abc'.index(centre[-1]) + 1}01.nii.gz")
        lbl = nib.load(root / "labels" / centre / img.get_filename().split("/")[-1])
        data, labels = np.asarray(img.dataobj), np.asarray(lbl.dataobj)
        found[centre] = (img.header.get_zooms(), float(np.median(data)), str(img.get_data_dtype()))
        assert set(np.unique(labels)) == {0, 1, 2}
        # label 1 is the left amygdala: larger world x (RAS) than label 2, whatever the stored orientation
        assert _world_centroid(lbl, labels == 1)[0] > 10 > -10 > _world_centroid(lbl, labels == 2)[0]
    zooms, medians, dtypes = zip(*found.values(), strict=True)
    assert len(set(zooms)) == 3 and len(set(dtypes)) == 2
    assert max(medians) / min(medians) > 100  # very different intensity scales


def test_gandlf_csv_and_registry(tmp_path):
    root = S.write_gandlf_csv(tmp_path / "g", n=2)
    lines = (root / "train.csv").read_text().splitlines()
    assert lines[0] == "SubjectID,Channel_0,Channel_1,Channel_2,Channel_3,Label,Center" and len(lines) == 3
    assert lines[1].startswith("subject_001,/") and lines[1].endswith(",site_1")
    assert set(S.WRITERS) == {
        "msd_hippocampus", "msd_spleen", "msd_liver", "msd_brain_tumour", "lits", "abdomenct1k", "brats",
        "amygdala_folders", "gandlf_csv", "adam", "lausanne",
    }  # fmt: skip
