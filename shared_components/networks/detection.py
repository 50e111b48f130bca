"""The aneurysm detector's network parts (``bundles/aneurysm_mra_retinanet``): a MONAI ResNet body with a feature
pyramid, as ``monai.apps.detection.networks.retinanet_network.resnet_fpn_feature_extractor`` builds it, but without
torchvision (which that function needs for one helper, ``IntermediateLayerGetter``; torchvision does not import beside
this project's CPU build of torch), and MONAI's ``RetinaNetDetector`` made usable without torchvision. The parameter
names are those of MONAI's ``BackboneWithFPN`` (``body.*``, ``fpn.*``), so weights move between the two."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from monai.networks.nets import resnet
from torch import Tensor, nn


class ResNetFPN(nn.Module):
    """ResNet stages ``returned_layers`` (1-4) of ``backbone`` feeding a feature pyramid with ``out_channels``
    channels and one extra max-pooled level; returns the ``len(returned_layers) + 1`` maps, finest first.
    Only the stem and the stages up to the last returned one are kept."""

    def __init__(
        self,
        backbone: resnet.ResNet,
        spatial_dims: int = 3,
        returned_layers: Sequence[int] = (1, 2),
        out_channels: int = 256,
    ):
        super().__init__()
        layers = [int(k) for k in returned_layers]
        if not layers or min(layers) < 1 or max(layers) > 4:
            raise ValueError(f"returned_layers must lie in 1..4, got {list(returned_layers)}.")
        names = ["conv1", "bn1", "act"] + ([] if backbone.no_max_pool else ["maxpool"])
        names += [f"layer{k}" for k in range(1, max(layers) + 1)]
        self.body = nn.ModuleDict(OrderedDict((n, getattr(backbone, n)) for n in names))
        self.returned = {f"layer{k}": str(i) for i, k in enumerate(layers)}
        stage2 = backbone.in_planes // 8
        self.fpn = FeaturePyramidNetwork(
            spatial_dims=spatial_dims,
            in_channels_list=[stage2 * 2 ** (k - 1) for k in layers],
            out_channels=out_channels,
            extra_blocks=LastLevelMaxPool(spatial_dims),
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features: dict[str, Tensor] = {}  # insertion-ordered, finest first (TorchScript has no OrderedDict type)
        for name, module in self.body.items():
            x = module(x)
            if name in self.returned:
                features[self.returned[name]] = x
        return self.fpn(features)


def resnet_fpn(
    depth: int = 18,
    in_channels: int = 1,
    spatial_dims: int = 3,
    returned_layers: Sequence[int] = (1, 2),
    conv1_stride: Sequence[int] = (2, 2, 1),
    conv1_size: Sequence[int] = (7, 7, 7),
    out_channels: int = 256,
) -> ResNetFPN:
    """:class:`ResNetFPN` on a MONAI ``resnet{depth}`` (10, 18, 34, 50, ...) with the given stem."""
    backbone = getattr(resnet, f"resnet{depth}")(
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        conv1_t_stride=list(conv1_stride),
        conv1_t_size=list(conv1_size),
    )
    return ResNetFPN(backbone, spatial_dims, returned_layers, out_channels)


class _Unavailable:
    """Stands in for a torchvision class: nothing is an instance of it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise ImportError("torchvision is not installed: use the ATSS matcher and the hard-negative sampler.")


def retinanet_detector(network: nn.Module, anchor_generator: nn.Module, **kwargs: object) -> nn.Module:
    """MONAI's ``RetinaNetDetector`` usable without torchvision: it tests ``isinstance`` against torchvision's
    ``Matcher`` (and ``BalancedPositiveNegativeSampler``) before its own ATSS matcher and hard-negative sampler, and a
    missing optional import raises there, so those two names are replaced by a class nothing is an instance of when
    torchvision is absent (its regular matcher and balanced sampler then say so when set)."""
    from monai.apps.detection.networks import retinanet_detector as module
    from monai.utils import optional_import

    for name in ("Matcher", "BalancedPositiveNegativeSampler"):
        _, available = optional_import("torchvision.models.detection._utils", name=name)
        if not available:
            setattr(module, name, _Unavailable)
    return module.RetinaNetDetector(network, anchor_generator, **kwargs)
