"""One U-Net planning rule (nnU-Net's ``get_pool_and_conv_props``): hand-checked plans, the fingerprint recommends
exactly the strides ``nnunet_dynunet`` builds, and the DynUNet bundles' networks are the planned ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from shared_components.bundle.scaffold import BUNDLES_DIR
from shared_components.data.fingerprint import plan
from shared_components.networks import nnunet_dynunet, plan_dynunet
from shared_components.planning import plan_unet

# ---- hand-checked plans -------------------------------------------------------------------------------------------


def test_isotropic_plan_is_nnunets_task04_plan():
    p = plan_unet([40, 56, 40], [1.0, 1.0, 1.0])  # -> 20x28x20 -> 10x14x10 -> 5x7x5; 5 < 8: stop
    assert p.strides == [[1, 1, 1]] + [[2, 2, 2]] * 3 and p.kernels == [[3, 3, 3]] * 4
    assert p.divisible_by == [8, 8, 8] and p.patch_size == [40, 56, 40]


def test_anisotropic_plan_pools_in_plane_until_isotropic():
    # 0.8x0.8x3 mm: z is 3.75x the finest -> in-plane only, no 3-voxel kernel across slices; 1.6x1.6x3: ratio < 2 ->
    # all axes; at 12x12x6 z is too small (< 8) -> in-plane only to 6x6x6; 6 levels
    p = plan_unet([192, 192, 48], [0.8, 0.8, 3.0])
    assert p.strides == [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 1]]
    assert p.kernels == [[3, 3, 1]] + [[3, 3, 3]] * 5
    assert p.divisible_by == [32, 32, 8]


def test_spacing_exactly_twice_the_finest_is_not_pooled():
    # nnU-Net pools an axis while its spacing is *less than* twice the finest: 1x1x2 mm pools in-plane first
    p = plan_unet([160, 160, 80], [1.0, 1.0, 2.0])
    assert p.strides[:3] == [[1, 1, 1], [2, 2, 1], [2, 2, 2]] and p.kernels[:2] == [[3, 3, 1], [3, 3, 3]]
    assert len(p.strides) == 6, "at most 6 levels"


def test_one_axis_alone_pools_only_while_at_least_12_voxels():
    p = plan_unet([8, 8, 40])  # 4x4x20: z alone, 20 >= 12 -> 4x4x10: 10 < 12, stop
    assert p.strides == [[1, 1, 1], [2, 2, 2], [1, 1, 2]]


def test_bottleneck_always_has_3_voxel_kernels():
    # 16x16x4 at 0.5x0.5x4 mm: in-plane twice to 4x4x4 at 2x2x4 mm, where z is still twice the finest
    p = plan_unet([16, 16, 4], [0.5, 0.5, 4.0])
    assert p.strides == [[1, 1, 1], [2, 2, 1], [2, 2, 1]]
    assert p.kernels == [[3, 3, 1], [3, 3, 1], [3, 3, 3]]


def test_axis_too_small_to_pool_keeps_the_kernel_rule_per_axis():
    # nnU-Net reads the kernel rule's spacings by the index among the poolable axes (and fails here: z is never
    # poolable); the rule here reads each axis' own spacing
    p = plan_unet([256, 256, 6], [0.5, 0.5, 5.0])
    assert all(s[2] == 1 for s in p.strides) and p.kernels[0] == [3, 3, 1] and p.kernels[-1] == [3, 3, 3]


def test_exact_plans_pool_even_sizes_only_nnunet_plans_pad():
    exact = plan_unet([40, 45, 40])
    assert all(s[1] == 1 for s in exact.strides), "an odd axis cannot be halved exactly"
    nnunet = plan_unet([40, 45, 40], exact=False)  # ceil(45 / 2) = 23 -> 12 -> 6: padded to 48
    assert nnunet.strides == [[1, 1, 1]] + [[2, 2, 2]] * 3 and nnunet.patch_size == [40, 48, 40]
    assert plan_unet(nnunet.patch_size) == nnunet


def test_even_rule_changes_nothing_for_patches_nnunet_would_use():
    rng = np.random.default_rng(0)
    compared = 0
    for _ in range(300):
        patch = (rng.integers(1, 13, 3) * rng.choice([1, 2, 4, 8, 16], 3)).tolist()
        spacing = rng.choice([0.5, 0.7, 0.8, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0], 3).tolist()
        exact, nnunet = plan_unet(patch, spacing), plan_unet(patch, spacing, exact=False)
        assert all(s % d == 0 for s, d in zip(patch, exact.divisible_by, strict=True)), "an exact plan fits"
        if nnunet.patch_size == patch:  # divisible as nnU-Net's planner would have padded it
            assert exact == nnunet, (patch, spacing)
            compared += 1
    assert compared > 50


def test_invalid_input():
    with pytest.raises(ValueError, match="different lengths"):
        plan_unet([32, 32, 32], [1.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        plan_unet([32, 0, 32])
    with pytest.raises(ValueError, match="whole voxels"):
        plan_unet([32.5, 32, 32])


# ---- the fingerprint recommends what nnunet_dynunet builds --------------------------------------------------------


DATASETS = {
    "isotropic": ([1.0, 1.0, 1.0], [35, 50, 36]),  # MSD Task04-like
    "isotropic_large": ([1.0, 1.0, 1.0], [240, 240, 155]),  # BraTS-like
    "thick_slices": ([0.8, 0.8, 5.0], [512, 512, 90]),
    "anisotropic_many_slices": ([1.0, 1.0, 4.0], [200, 200, 200]),
    "prostate_like": ([0.6, 0.6, 3.6], [320, 320, 20]),
    "nearly_isotropic": ([1.25, 1.25, 1.37], [320, 320, 110]),
}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_fingerprint_strides_are_what_dynunet_builds(name):
    spacing, shape = DATASETS[name]
    rng = np.random.default_rng(0)
    spacings = np.tile(spacing, (12, 1)) * rng.uniform(0.95, 1.05, (12, 3))
    shapes = np.tile(shape, (12, 1)) + rng.integers(-3, 4, (12, 3))
    rec = plan(spacings, shapes)
    net = nnunet_dynunet(1, 2, rec["patch_size"], rec["pixdim"], base_filters=4, max_filters=8)
    assert net.strides == [[1, 1, 1]] + rec["strides"]
    assert (net.kernel_size, net.strides) == plan_dynunet(rec["patch_size"], rec["pixdim"])
    assert rec["divisible_by"] == np.prod(net.strides, axis=0).tolist()
    assert all(s % d == 0 for s, d in zip(rec["patch_size"], rec["divisible_by"], strict=True))


@pytest.mark.usefixtures("one_thread")
def test_recommended_anisotropic_network_runs_on_the_recommended_patch():
    rec = plan(np.tile([0.7, 0.7, 3.0], (4, 1)), np.tile([100, 100, 12], (4, 1)), voxel_budget=48 * 48 * 12)
    assert rec["strides"][0] == [2, 2, 1]
    net = nnunet_dynunet(1, 2, rec["patch_size"], rec["pixdim"], base_filters=4, max_filters=8).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 1, *rec["patch_size"])).shape == (1, 2, *rec["patch_size"])


# ---- the DynUNet bundles' networks --------------------------------------------------------------------------------

POOLINGS = {  # isotropic poolings of each DynUNet bundle's network (its patch_size at its pixdim)
    "hippocampus_mri_dynunet": 3,  # 40x56x40 at 1 mm, the network a trained models/model.pt would hold
    "spleen_ct_dynunet": 4,
    "liver_ct_dynunet": 4,
    "abdomen_ct_dynunet": 4,
    "brats_mri_dynunet": 5,
    "amygdala_mri_dynunet": 4,
}


@pytest.mark.parametrize("bundle", sorted(POOLINGS))
def test_dynunet_bundle_networks_are_unchanged(bundle):
    config = yaml.safe_load((BUNDLES_DIR / bundle / "configs" / "train.yaml").read_text())
    kernels, strides = plan_dynunet(config["patch_size"], config["preprocessing_args"].get("pixdim"))
    assert strides == [[1, 1, 1]] + [[2, 2, 2]] * POOLINGS[bundle]
    assert kernels == [[3, 3, 3]] * (POOLINGS[bundle] + 1)
