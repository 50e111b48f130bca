"""Averaged probabilities: a network that averages several trained copies (e.g. the models of all cross-validation
folds), usable as ``network`` in any bundle's ``inference.yaml``, and test-time mirroring (``tta_flip_axes``)."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.inferers import Inferer
from torch import nn


def load_weights(path: str | Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A checkpoint's state dict, whether saved bare (``CheckpointSaver`` with one object), under ``model``, or from
    a DistributedDataParallel network (``module.`` prefixes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist: train the fold first.")
    state = torch.load(path, map_location=device, weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    return {k.removeprefix("module."): v for k, v in state.items()}


class FoldEnsemble(nn.Module):
    """Average the softmax (or, with ``multilabel``, sigmoid) probabilities of copies of ``network`` loaded from
    ``checkpoints``. The output is the log of the averaged probabilities (the logit for sigmoid), so the bundle's
    usual softmax/sigmoid post-processing recovers exactly the averaged probabilities."""

    def __init__(
        self,
        network: nn.Module,
        checkpoints: Sequence[str | Path],
        device: torch.device | str = "cpu",
        multilabel: bool = False,
    ):
        super().__init__()
        if not checkpoints:
            raise ValueError("FoldEnsemble needs at least one checkpoint.")
        self.multilabel = multilabel
        self.members = nn.ModuleList()
        for path in checkpoints:
            member = copy.deepcopy(network)
            member.load_state_dict(load_weights(path, device))
            self.members.append(member.to(device).eval())

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return as_logits(
            torch.stack([probabilities(m(x), self.multilabel) for m in self.members]).mean(0), self.multilabel
        )


def probabilities(logits: torch.Tensor | Sequence[torch.Tensor], multilabel: bool = False) -> torch.Tensor:
    """Softmax (sigmoid with ``multilabel``) probabilities of a network output, in float32; of a deep-supervision
    output, its full-resolution head."""
    if isinstance(logits, list | tuple):  # deep supervision: the full-resolution output comes first
        logits = logits[0]
    if logits.ndim == 6:  # stacked deep-supervision outputs [B, N, C, ...]
        logits = logits[:, 0]
    return torch.sigmoid(logits.float()) if multilabel else torch.softmax(logits.float(), dim=1)


def as_logits(p: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Logits whose softmax (sigmoid) gives back the probabilities ``p``: a bundle's usual post-processing applies."""
    p = p.clamp(1e-7, 1 - 1e-7)
    return torch.logit(p) if multilabel else torch.log(p)


class MirroredInferer(Inferer):
    """Test-time mirroring as nnU-Net does it: ``inferer``'s output on the input and on its mirror images along every
    non-empty subset of ``axes`` (spatial axes: 0 is the first after the channel), each flipped back, averaged as
    probabilities; returned as logits (:func:`as_logits`). Costs ``2 ** len(axes)`` passes."""

    def __init__(self, inferer: Inferer, axes: Sequence[int], multilabel: bool = False):
        super().__init__()
        self.inferer, self.multilabel = inferer, multilabel
        self.axes = sorted({int(a) for a in axes})
        self.flips = [c for r in range(len(self.axes) + 1) for c in itertools.combinations(self.axes, r)]

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        spatial = inputs.ndim - 2
        if any(a < 0 or a >= spatial for a in self.axes):
            raise ValueError(f"tta_flip_axes {self.axes} must be spatial axes 0..{spatial - 1}.")
        total = None
        for flip in self.flips:
            dims = [a + 2 for a in flip]
            x = torch.flip(inputs, dims) if dims else inputs
            p = probabilities(self.inferer(x, network, *args, **kwargs), self.multilabel)
            p = torch.flip(p, dims) if dims else p
            total = p if total is None else total + p
        return as_logits(total / len(self.flips), self.multilabel)


def mirrored(
    inferer: Inferer, axes: Sequence[int] | None, multilabel: bool = False, trained_axes: Sequence[int] | None = None
) -> Inferer:
    """``inferer`` itself when ``axes`` is empty (the default: no test-time augmentation), else a
    :class:`MirroredInferer` over those axes. With ``trained_axes`` (the training ``flip_axes``), mirroring along
    any other axis is refused: a network never shown those mirror images can swap classes that lie along the axis
    (the hippocampus model's anterior and posterior: mean Dice 0.876 -> 0.279 with ``[0, 1, 2]``)."""
    if not axes:
        return inferer
    untrained = sorted({int(a) for a in axes} - {int(a) for a in (trained_axes or [])})
    if trained_axes is not None and untrained:
        raise ValueError(
            f"tta_flip_axes {list(axes)}: the network was trained with mirroring along {list(trained_axes)} only "
            f"(augmentation_args#flip_axes), not {untrained}; mirror along the trained axes, e.g. "
            f"--tta_flip_axes {list(trained_axes)}."
        )
    return MirroredInferer(inferer, axes, multilabel)


# a bundle's own cross-model ensemble: <name>.json (a config with ``network_def``) and <name>.pt (its weights) per
# member network, averaged with the bundle's own network by inference.yaml (``new_bundle.py ship --members``)
MEMBERS_DIR = "models/ensemble"


def ensemble_members(bundle_root: str | Path, device: torch.device | str = "cpu") -> list[nn.Module]:
    """The member networks in ``<bundle_root>/models/ensemble/``, weights loaded, in name order; none without it."""
    from monai.bundle import ConfigParser

    folder = Path(bundle_root) / MEMBERS_DIR
    networks, configs = [], sorted(folder.glob("*.json"))
    for config in configs:
        weights = config.with_suffix(".pt")
        if not weights.is_file():
            raise FileNotFoundError(
                f"{weights} is missing: ensemble member {config.stem} of {folder} has a network but no weights "
                f"(remove {config.name} to serve the bundle without it)."
            )
        parser = ConfigParser(json.loads(config.read_text()))
        network = parser.get_parsed_content("network_def").to(device)
        network.load_state_dict(load_weights(weights, device))
        networks.append(network.eval())
    if networks:
        names = ", ".join(c.stem for c in configs)
        print(f"ensemble: this network averaged with {len(networks)} member(s) of {folder} ({names})", flush=True)
    return networks


class WithMembers(Inferer):
    """``inferer`` (the bundle's sliding window) on the evaluator's network and on each member network, their
    probabilities averaged with equal weight; returned as logits (:func:`as_logits`)."""

    def __init__(self, inferer: Inferer, members: Sequence[nn.Module], multilabel: bool = False):
        super().__init__()
        self.inferer, self.members, self.multilabel = inferer, list(members), multilabel

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        nets = (network, *self.members)
        total = sum(probabilities(self.inferer(inputs, n, *args, **kwargs), self.multilabel) for n in nets)
        return as_logits(total / len(nets), self.multilabel)


def with_members(inferer: Inferer, members: Sequence[nn.Module] | None, multilabel: bool = False) -> Inferer:
    """``inferer`` itself without members (every bundle but an ensemble's), else a :class:`WithMembers`."""
    return WithMembers(inferer, members, multilabel) if members else inferer


class BundleEnsemble(Inferer):
    """Average the probabilities of several trained bundles (e.g. the leaderboard's top three, different networks):
    each member runs its own ``inferer`` (sliding window at its own patch size) with its own ``network_def`` and
    weights, all on the same preprocessed input; the output is logits of the averaged probabilities (like
    :class:`FoldEnsemble`). The network the evaluator passes is not used. Members must share the preprocessing
    (:func:`check_same_preprocessing`). ``overrides`` (one mapping per member) are the config overrides its
    weights were trained with (``network_def#init_filters``, ``patch_size``; see :func:`bundle_parser`)."""

    def __init__(
        self,
        bundles: Sequence[str | Path],
        device: torch.device | str = "cpu",
        multilabel: bool = False,
        checkpoints: Sequence[str | Path | None] | None = None,
        overrides: Sequence[Mapping[str, Any] | None] | None = None,
    ):
        super().__init__()
        if not bundles:
            raise ValueError("BundleEnsemble needs at least one bundle.")
        checkpoints = list(checkpoints or [None] * len(bundles))
        overrides = list(overrides or [None] * len(bundles))
        if not len(checkpoints) == len(overrides) == len(bundles):
            raise ValueError(f"{len(bundles)} bundles but {len(checkpoints)} checkpoints, {len(overrides)} overrides.")
        self.multilabel, self.members = multilabel, []
        for bundle, ckpt, over in zip(bundles, checkpoints, overrides, strict=True):
            parser = bundle_parser(bundle, over)
            network = parser.get_parsed_content("network_def").to(device)
            network.load_state_dict(load_weights(ckpt or Path(bundle) / "models" / "model.pt", device))
            self.members.append((network.eval(), parser.get_parsed_content("inferer")))

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, network: Any = None, *args: Any, **kwargs: Any) -> torch.Tensor:
        total = sum(probabilities(inf(inputs, net, *args, **kwargs), self.multilabel) for net, inf in self.members)
        return as_logits(total / len(self.members), self.multilabel)


def bundle_parser(bundle: str | Path, overrides: Mapping[str, Any] | None = None) -> Any:
    """A bundle's ``configs/inference.yaml``, read with its own ``bundle_root`` and the ``overrides`` of a training
    run (e.g. a benchmark's): those of ids inference.yaml has (``network_def#channels``, ``patch_size``); training
    settings it lacks (``augmentation_args#mode``, ``checkpoint``) do not concern inference and are left out."""
    from monai.bundle import ConfigParser

    bundle = Path(bundle).resolve()
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.yaml"))
    parser["bundle_root"] = str(bundle)
    for key, value in (overrides or {}).items():
        parent = key.replace("::", "#").rpartition("#")[0]
        if key in parser or (parent and parent in parser):
            parser[key] = value
    return parser


def check_same_preprocessing(
    bundles: Sequence[str | Path], overrides: Sequence[Mapping[str, Any] | None] | None = None
) -> None:
    """Refuse an ensemble whose members preprocess differently (spacing, orientation, intensity) or predict other
    classes: their probabilities would not be of the same voxels and labels."""
    keys = ("preprocessing_args", "num_classes", "multilabel", "num_channels")
    parsers = [bundle_parser(b, o) for b, o in zip(bundles, overrides or [None] * len(bundles), strict=True)]
    first = {k: parsers[0][k] for k in keys}
    for bundle, parser in zip(bundles[1:], parsers[1:], strict=True):
        other = {k: parser[k] for k in keys}
        diff = [k for k in keys if other[k] != first[k]]
        if diff:
            detail = "; ".join(f"{k}: {first[k]!r} vs {other[k]!r}" for k in diff)
            raise ValueError(
                f"{Path(bundle).name} cannot join an ensemble with {Path(bundles[0]).name}: {detail}. Ensemble "
                "bundles of one dataset spec (the same preprocessing and classes)."
            )
