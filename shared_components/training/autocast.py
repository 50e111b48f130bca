"""bfloat16 mixed precision for training on CPUs with AMX.

MONAI's trainers and evaluators take ``amp`` for CUDA only (``torch.autocast("cuda")``). On a CPU with Intel AMX
(Sapphire Rapids and later) oneDNN runs bfloat16 convolutions on the matrix units: a hippocampus training step is
about twice as fast there (``scripts/benchmark_cpu_bf16.py``). :class:`AutocastInferer` wraps the inferer a trainer
calls, so the forward pass runs under ``torch.autocast("cpu", torch.bfloat16)`` and the loss, the optimizer and the
weights stay float32 (the backward pass follows the forward's dtypes); nothing else in MONAI's iteration changes.
Without AMX bfloat16 is emulated and slower, so the default turns it on only where AMX is present, and not for
networks measured slower in it (:func:`cpu_bf16_pays`).
"""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer


def cpu_bf16_available(device: torch.device | str) -> bool:
    """Whether bfloat16 autocast pays on ``device``: a CPU with AMX bfloat16 tiles (``torch.cpu`` capabilities)."""
    if torch.device(device).type != "cpu":
        return False
    return bool(torch.cpu.get_capabilities().get("amx_bf16", False))


def cpu_bf16_pays(network: torch.nn.Module, device: torch.device | str) -> bool:
    """The bundles' ``cpu_bf16`` default: :func:`cpu_bf16_available` on ``device``, except for networks built of
    shifted-window transformer blocks (SwinUNETR), whose many small window-attention matmuls and casts make the
    bfloat16 step slower than float32: 12.26 s against 11.42 s float32 channels-last for the hippocampus SwinUNETR,
    while UNETR's plain ViT gains 2.12x (one core, ``segbundles benchmark precision``, README "bfloat16 on CPUs
    with AMX")."""
    from monai.networks.nets.swin_unetr import SwinTransformerBlock

    if any(isinstance(m, SwinTransformerBlock) for m in network.modules()):
        return False
    return cpu_bf16_available(device)


def _to_float32(output: Any) -> Any:
    """bfloat16 tensors of an output (a tensor, or a list/tuple/dict of them: deep-supervision heads) as float32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.dtype == torch.bfloat16 else output
    if isinstance(output, list | tuple):
        return type(output)(_to_float32(o) for o in output)
    if isinstance(output, dict):
        return {k: _to_float32(v) for k, v in output.items()}
    return output


class AutocastInferer(Inferer):
    """Run ``inferer`` under CPU bfloat16 autocast when ``enabled`` (else exactly ``inferer``); outputs are float32.

    Args:
        inferer: the inferer to wrap (``SimpleInferer`` for training, ``SlidingWindowInferer`` for validation).
        enabled: autocast on; ``False`` calls ``inferer`` unchanged, in float32.
    """

    def __init__(self, inferer: Inferer, enabled: bool = True) -> None:
        super().__init__()
        self.inferer = inferer
        self.enabled = bool(enabled)

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return self.inferer(inputs, network, *args, **kwargs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = self.inferer(inputs, network, *args, **kwargs)
        return _to_float32(output)


def channels_last_pays(network: torch.nn.Module, cpu_bf16: bool) -> bool:
    """Whether to train ``network`` in the channels-last memory format: yes (faster 3D convolutions in oneDNN and
    cuDNN), except under CPU bfloat16 for networks with group normalisation, whose channels-last bfloat16 kernels
    are slower than the convolutions gain: SegResNet's step 1.54 s channels-last against 0.62 s contiguous (one
    core, ``segbundles benchmark precision``; float32 channels-last 1.20 s)."""
    return not (cpu_bf16 and any(isinstance(m, torch.nn.GroupNorm) for m in network.modules()))
