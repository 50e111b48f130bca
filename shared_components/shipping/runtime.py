"""Run-time helpers of exported bundles: the exporter's config rewrites call them, so they are vendored with the rest.

A DynUNet trained with deep supervision carries extra output heads that evaluation and inference never use, and
MONAI's DynUNet does not script with them. The export therefore ships ``models/model.pt`` without them
(:func:`inference_state`) and its inference config builds the network without them (``deep_supervision: false``).
Every config passes its network through :func:`optional_deep_supervision_heads`, so checkpoints load strictly
whichever side has the heads: a training run's (with heads) into the inference network, the shipped weights (without
them) into the training or evaluation network (whose heads keep their initial values, unused there). Only head
weights are dropped or filled in; any other missing or unexpected key is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

# module names of MONAI DynUNet's deep-supervision heads (``deep_supervision_heads.<i>`` and, the same modules,
# ``...next_layer.super_head`` inside the skip layers)
HEAD_MODULES = ("deep_supervision_heads", "super_head")


def is_head_key(key: str) -> bool:
    """Whether a state-dict key belongs to a deep-supervision head."""
    return any(part in HEAD_MODULES for part in key.split("."))


def inference_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A DynUNet state dict without its deep-supervision heads."""
    return {k: v for k, v in state.items() if not is_head_key(k)}


def _match_heads(module: torch.nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    own = {k: v for k, v in module.state_dict().items() if is_head_key(k)}
    for key in [k for k in state_dict if k.startswith(prefix) and is_head_key(k[len(prefix) :])]:
        if key[len(prefix) :] not in own:
            del state_dict[key]
    for key, value in own.items():
        state_dict.setdefault(prefix + key, value)


def optional_deep_supervision_heads(network: torch.nn.Module) -> torch.nn.Module:
    """``network``, made to load state dicts with or without deep-supervision heads: head weights it lacks are
    dropped, head weights the state dict lacks keep their current values. Returned as is otherwise (the same
    object, so a config can wrap ``@network_def`` and still script ``network_def``)."""
    network.register_load_state_dict_pre_hook(_match_heads)
    return network
