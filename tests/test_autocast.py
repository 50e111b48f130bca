"""CPU bfloat16 autocast of the training forward pass (shared_components/training/autocast.py)."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.inferers import SimpleInferer
from monai.networks.nets import DynUNet

from shared_components.bundle.runner import output_overrides
from shared_components.training import AutocastInferer, cpu_bf16_available, cpu_bf16_pays
from tests.helpers import HIPPO, cwd, one_epoch


def _conv_dtypes(network: torch.nn.Module) -> list[torch.dtype]:
    """The output dtypes of ``network``'s convolutions, appended on every forward pass."""
    seen: list[torch.dtype] = []
    for m in network.modules():
        if isinstance(m, torch.nn.Conv3d):
            m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


def test_autocast_inferer_runs_the_forward_in_bfloat16_and_returns_float32():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 1))
    seen = _conv_dtypes(net)
    x = torch.randn(2, 1, 8, 8, 8)
    plain = AutocastInferer(SimpleInferer(), enabled=False)(x, net)
    assert seen == [torch.float32] * 2 and torch.equal(plain, SimpleInferer()(x, net))
    seen.clear()
    out = AutocastInferer(SimpleInferer())(x, net)
    assert seen == [torch.bfloat16] * 2, "the convolutions did not run in bfloat16"
    assert out.dtype == torch.float32 and out.shape == plain.shape
    assert not torch.equal(out, plain) and torch.allclose(out, plain, atol=0.05, rtol=0.05)
    out.sum().backward()  # the backward pass outside the autocast region reaches float32 weights
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters())


def test_autocast_inferer_casts_deep_supervision_heads():
    net = DynUNet(3, 1, 3, [3, 3, 3], [1, 2, 2], [2, 2], deep_supervision=True, deep_supr_num=1).train()
    out = AutocastInferer(SimpleInferer())(torch.randn(1, 1, 16, 16, 16), net)
    assert out.dtype == torch.float32 and out.shape[1] == 2  # [B, heads, C, ...], stacked by DynUNet


def test_cpu_bf16_available_only_on_a_cpu_with_amx():
    assert not cpu_bf16_available("cuda")
    assert cpu_bf16_available("cpu") == bool(torch.cpu.get_capabilities().get("amx_bf16"))


@pytest.mark.parametrize(("model", "measured_faster"), [("swin_unetr", False), ("unetr", True), ("segresnet", True)])
def test_bundles_default_to_bfloat16_only_where_it_was_measured_faster(bundles_dir, model, measured_faster):
    """The bundles' ``cpu_bf16`` default, parsed from their own train.yaml: on where AMX is present, except for
    SwinUNETR (0.93x in bfloat16, README "bfloat16 on CPUs with AMX"); never on a GPU device."""
    parser = ConfigParser()
    parser.read_config(str(bundles_dir / f"hippocampus_mri_{model}" / "configs" / "train.yaml"))
    parser["bundle_root"] = str(bundles_dir / f"hippocampus_mri_{model}")
    assert parser.get_parsed_content("cpu_bf16") == (measured_faster and cpu_bf16_available("cpu"))
    assert not cpu_bf16_pays(parser.get_parsed_content("network_def"), "cuda")


@pytest.mark.parametrize("cpu_bf16", [True, False])
def test_bundle_trains_in_bfloat16_when_on_and_records_it(bundles_dir, hippo_dir, tiny_hippo, tmp_path, cpu_bf16):
    """One epoch of the hippocampus UNet through MONAI's SupervisedTrainer: its convolutions run in bfloat16 during
    training only (validation stays float32), the weights stay float32, and the run's signature says so (absent when
    off, so runs from before the option resume)."""
    overrides = {**one_epoch(hippo_dir, tiny_hippo), **output_overrides(tmp_path / "run"), "check_data": "off"}
    with cwd(bundles_dir / HIPPO):
        w = ConfigWorkflow(config_file="configs/train.yaml", workflow_type="train", cpu_bf16=cpu_bf16, **overrides)
        w.initialize()
        network = w.parser.get_parsed_content("network")
        seen = _conv_dtypes(network)
        trainer = w.parser.get_parsed_content("train#trainer")
        dtypes: dict[str, set] = {"train": set(), "validate": set()}
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _e: dtypes["train"].update(seen) or seen.clear())
        w.run()
        w.finalize()
    dtypes["validate"] = set(seen)
    assert dtypes["train"] == {torch.bfloat16 if cpu_bf16 else torch.float32}
    assert dtypes["validate"] == {torch.float32}
    assert all(p.dtype == torch.float32 for p in network.parameters())
    signature = json.loads((tmp_path / "run" / "config.json").read_text())["signature"]
    assert signature.get("cpu_bf16") is (True if cpu_bf16 else None)


def test_precision_benchmark_times_the_bundles_own_training_step(tmp_path):
    from shared_components.experiments.precision_benchmark import benchmark_precision, format_result

    out = tmp_path / "precision.json"
    result = benchmark_precision(HIPPO, steps=1, warmup=0, variants="fp32_cl,bf16", json_out=str(out))
    row = result["bundles"][HIPPO]
    assert set(row) == {"fp32_cl", "bf16"} and all(v["step_s"] > 0 for v in row.values())
    assert row["fp32_cl"]["speedup"] == 1.0 and json.loads(out.read_text())["bundles"][HIPPO] == row
    assert HIPPO in format_result(result)
    with pytest.raises(ValueError, match="Unknown variants"):
        benchmark_precision(HIPPO, variants="fp16")
