"""Test-time mirroring (``tta_flip_axes``): the probabilities averaged over the input and its flipped copies."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer

from shared_components.evaluation import MirroredInferer, mirrored
from shared_components.evaluation.ensemble import probabilities


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv3d(1, 3, 3, padding=1).eval()


def _x() -> torch.Tensor:
    return torch.randn(2, 1, 8, 6, 4, generator=torch.Generator().manual_seed(1))


def test_no_axes_is_the_inferer_itself():
    base = SimpleInferer()
    assert mirrored(base, []) is base and mirrored(base, None) is base


@torch.no_grad()
def test_average_over_every_subset_of_the_axes_flipped_back():
    net, x = _net(), _x()
    out = mirrored(SimpleInferer(), [0, 2])(x, net)
    expected = torch.zeros_like(out)
    for dims in ([], [2], [4], [2, 4]):
        flipped = torch.flip(x, dims) if dims else x
        p = torch.softmax(net(flipped), 1)
        expected += torch.flip(p, dims) if dims else p
    torch.testing.assert_close(torch.softmax(out, 1), expected / 4, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(torch.softmax(out, 1), torch.softmax(net(x), 1), atol=1e-3)  # the mirrors count


@torch.no_grad()
def test_a_mirror_symmetric_network_is_unchanged_and_sigmoid_regions_work():
    net = lambda t: torch.cat([t, t.flip(2), -t], 1) + t.flip(2)  # noqa: E731 - symmetric along axis 0 in total
    x = _x()
    sym = lambda t: net(t) + net(t.flip(2)).flip(2)  # noqa: E731
    for multilabel in (False, True):
        out = mirrored(SimpleInferer(), [0], multilabel)(x, sym)
        torch.testing.assert_close(
            probabilities(out, multilabel), probabilities(sym(x), multilabel), atol=1e-5, rtol=1e-4
        )


@torch.no_grad()
def test_wraps_the_sliding_window_and_refuses_non_spatial_axes():
    net, x = _net(), _x()
    sw = SlidingWindowInferer(roi_size=[4, 4, 4], sw_batch_size=2, overlap=0.5, mode="gaussian")
    assert mirrored(sw, [1])(x, net).shape == (2, 3, 8, 6, 4)
    with pytest.raises(ValueError, match="spatial axes 0..2"):
        MirroredInferer(sw, [3])(x, net)


def test_axes_the_training_did_not_mirror_are_refused():
    assert isinstance(mirrored(SimpleInferer(), [0], trained_axes=[0, 1]), MirroredInferer)
    with pytest.raises(ValueError, match=r"trained with mirroring along \[0\] only .* not \[1, 2\]"):
        mirrored(SimpleInferer(), [0, 1, 2], trained_axes=[0])
