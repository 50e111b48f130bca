"""The networks: nnU-Net-style DynUNet planning, MedFormer, one output in eval mode, deep supervision in training
only, and TorchScript export as each model's docs say."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser

from shared_components.bundle.scaffold import BUNDLES_DIR, spec_names
from shared_components.networks import MedFormer, nnunet_dynunet, plan_dynunet
from shared_components.networks.medformer import BidirectionalAttention
from shared_components.training import build_loss, prepare_network
from tests.helpers import tiny_overrides, tiny_patch

# the bundles' tiny MedFormer, as constructor arguments
TINY_MEDFORMER = {k.removeprefix("network_def#"): tuple(v) for k, v in tiny_overrides("medformer").items() if "#" in k}
# the hippocampus bundles sized like the reference UNet (about 1.2 M parameters); the transformers' smallest variants
# (UNETR, SwinUNETR) are larger
REFERENCE_SIZED = ("unet", "dynunet", "attention_unet", "segresnet", "medformer")


pytestmark = pytest.mark.usefixtures("one_thread")


def _seeded(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


# ---- DynUNet planned like nnU-Net -------------------------------------------------------------------------------


def test_plan_isotropic_hippocampus_like_nnunet():
    kernels, strides = plan_dynunet([40, 56, 40], [1.0, 1.0, 1.0])
    assert strides == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]  # 40x56x40 -> 5x7x5, as nnU-Net plans Task04
    assert kernels == [[3, 3, 3]] * 4


def test_plan_anisotropic_pools_in_plane_first():
    kernels, strides = plan_dynunet([192, 192, 48], [0.8, 0.8, 3.0])
    assert strides[1] == [2, 2, 1], "thick slices must not be pooled while the in-plane spacing is much finer"
    assert kernels[0] == [3, 3, 1], "no convolution across 3 mm slices at 0.8 mm in-plane resolution"
    assert kernels[1] == [3, 3, 3]  # 1.6 x 1.6 x 3.0 mm: spacing ratio < 2, 3-voxel kernels from here on
    sizes = torch.tensor([192, 192, 48])
    for s in strides:
        sizes = sizes // torch.tensor(s)
    assert sizes.min() >= 4 and (sizes == torch.tensor([6, 6, 6])).all()


def test_plan_keeps_odd_axes_and_rejects_tiny_patches():
    _, strides = plan_dynunet([40, 45, 40])
    assert all(s[1] == 1 for s in strides), "an odd axis cannot be halved exactly"
    with pytest.raises(ValueError, match="too small"):
        nnunet_dynunet(1, 2, [6, 6, 6])


def test_dynunet_deep_supervision_in_training_only():
    net = nnunet_dynunet(1, 3, [32, 32, 32], base_filters=8)
    x, y = _seeded(2, 1, 32, 32, 32), torch.randint(0, 3, (2, 1, 32, 32, 32))
    out = net.train()(x)
    assert out.shape == (2, 3, 3, 32, 32, 32)  # [B, 1 + 2 heads, C, ...]
    loss = build_loss("dice_ce")(out, y)
    loss.backward()
    assert torch.isfinite(loss) and net.output_block.conv.conv.weight.grad is not None
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 3, 32, 32, 32)


def test_dynunet_traces_for_any_input_size():
    """The documented export traces the network in eval mode; the trace is not tied to the traced input size."""
    net = nnunet_dynunet(1, 3, [40, 56, 40], base_filters=8).eval()
    traced = torch.jit.trace(net, _seeded(1, 1, 40, 56, 40), check_trace=False)
    for shape in [(1, 1, 40, 56, 40), (2, 1, 48, 64, 32)]:
        x = _seeded(*shape)
        with torch.no_grad():
            torch.testing.assert_close(traced(x), net(x))


# ---- MedFormer ---------------------------------------------------------------------------------------------------


def test_medformer_deep_supervision_gradients_and_divisibility():
    """Deep-supervision heads in training, gradients to every parameter, one output in eval mode, and a clear error
    for an input not divisible by the network's total stride."""
    net = MedFormer(2, 4, deep_supervision=True, **TINY_MEDFORMER)
    x = _seeded(2, 2, 32, 40, 24)
    out = net.train()(x)
    assert out.shape == (2, 3, 4, 32, 40, 24)  # full resolution + 2 upsampled deep-supervision heads
    build_loss("dice_ce")(out, torch.randint(0, 4, (2, 1, 32, 40, 24))).backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 4, 32, 40, 24)
    with pytest.raises(ValueError, match="divisible by 8"):
        net(_seeded(1, 2, 32, 36, 24))


def test_medformer_scripts_for_any_input_size():
    net = MedFormer(1, 3, **TINY_MEDFORMER).eval()
    scripted = torch.jit.script(net)
    for shape in [(1, 1, 32, 32, 32), (2, 1, 48, 40, 16)]:
        x = _seeded(*shape)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), net(x))


def test_bidirectional_attention_is_global_through_the_semantic_map():
    """One B-MHA step carries information across the whole volume (local parts: a 3x3x3 depthwise conv only)."""
    attn = BidirectionalAttention(dim=8, heads=2, map_size=(2, 2, 2))
    x = _seeded(1, 8, 16, 16, 16).requires_grad_(True)
    s = _seeded(1, 8, 8)
    out, s_out = attn(x, s)
    out[0, :, 0, 0, 0].sum().backward()
    assert x.grad[0, :, -1, -1, -1].abs().sum() > 0, "the far corner does not reach the output"
    assert s_out.shape == s.shape


@pytest.mark.parametrize("model", REFERENCE_SIZED)
def test_hippocampus_network_is_sized_like_the_reference_unet(model: str):
    """The hippocampus bundle's network, as shipped, has 1-2 M parameters like the reference UNet (CPU-sized)."""
    parser = ConfigParser()
    parser.read_config(BUNDLES_DIR / f"hippocampus_mri_{model}" / "configs" / "inference.yaml")
    count = sum(p.numel() for p in parser.get_parsed_content("network_def").parameters())
    assert 1.0e6 < count < 2.0e6, f"{model}: {count} parameters"


@pytest.mark.parametrize("model", spec_names("model"))
def test_every_trainable_parameter_gets_a_gradient(model: str):
    """What DistributedDataParallel needs without find_unused_parameters: after prepare_network, one training
    backward reaches every trainable parameter (MONAI's UNETR builds cross-attention norms it never uses)."""
    parser = ConfigParser()
    parser.read_config(BUNDLES_DIR / f"hippocampus_mri_{model}" / "configs" / "train.yaml")
    parser.update(tiny_overrides(model))
    net = prepare_network(parser.get_parsed_content("network_def"), "cpu").train()
    out = net(_seeded(1, 1, *tiny_patch(model)))
    sum(o.float().mean() for o in (out if isinstance(out, list | tuple) else [out])).backward()
    missing = [name for name, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{model}: trainable parameters without a gradient: {missing[:5]}"


# ---- every model: one tensor in eval mode, TorchScript as documented ---------------------------------------------


@pytest.mark.parametrize("model", spec_names("model"))
def test_torchscript_export(model: str):
    parser = ConfigParser()
    parser.read_config(BUNDLES_DIR / f"brats_mri_{model}" / "configs" / "inference.yaml")  # 4 channels in, 3 out
    patch = tiny_patch(model)
    for k, v in tiny_overrides(model).items():
        parser[k] = v
    net = parser.get_parsed_content("network_def").eval()
    x = _seeded(1, 4, *patch)
    with torch.no_grad():
        eager = net(x)
    assert isinstance(eager, torch.Tensor) and eager.shape == (1, 3, *patch)
    if model in ("swin_unetr", "dynunet"):  # documented: not scriptable, traced (in eval mode)
        with pytest.raises(Exception):  # noqa: B017 (TorchScript raises several error types)
            torch.jit.script(net)
        exported = torch.jit.trace(net, x, check_trace=False)
    else:
        exported = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), eager, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["dynunet", "swin_unetr", "medformer"])
def test_documented_export_command(model: str, tmp_path):
    """The export command of a bundle's docs, run as written through the stock CLI (strict weight loading),
    on a checkpoint of the training network; the exported module equals the eager network."""
    import re
    import shlex
    import subprocess
    import sys

    bundle = BUNDLES_DIR / f"hippocampus_mri_{model}"
    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "inference.yaml")
    net = parser.get_parsed_content("network_def")
    torch.save(net.state_dict(), tmp_path / "model.pt")
    docs = (bundle / "docs" / "README.md").read_text()
    command = re.search(r"# export to TorchScript\n(python -m monai.bundle ckpt_export.*?)\n```", docs, re.S).group(1)
    args = shlex.split(command.replace("\\\n", " "))[1:]  # drop "python"
    args[args.index("--filepath") + 1] = str(tmp_path / "model.ts")
    args[args.index("--ckpt_file") + 1] = str(tmp_path / "model.pt")
    r = subprocess.run([sys.executable, *args], cwd=bundle, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    exported = torch.jit.load(str(tmp_path / "model.ts"))
    x = _seeded(1, 1, *parser["patch_size"])
    with torch.no_grad():
        torch.testing.assert_close(exported(x), net.eval()(x), rtol=1e-4, atol=1e-4)
