"""A training step's cost in float32 and in CPU bfloat16 autocast, with and without channels-last, side by side.

:func:`benchmark_precision` builds each bundle's network, loss and optimizer from its own ``configs/train.yaml``
(the real ids, so the numbers are the bundle's), and times full training steps (forward under
:class:`~shared_components.training.autocast.AutocastInferer`, loss, backward, optimizer step) on random batches
of the bundle's ``batch_size`` x ``patch_size``, the variants taking turns (A, B, C, D, A, ...) so a machine shared
with other work slows all alike. It reports the median seconds per step and each variant's speed-up over
float32 channels-last (the bundles' float32 default). The choice the bundles make from it: ``cpu_bf16`` on where
AMX is present except for SwinUNETR (``cpu_bf16_pays``), and ``channels_last`` off under bfloat16 for the
group-normalised networks, where it is slower (``channels_last_pays``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

VARIANTS = {  # name: (bfloat16 autocast, channels-last)
    "fp32_cl": (False, True),
    "fp32": (False, False),
    "bf16_cl": (True, True),
    "bf16": (True, False),
}


def _step_fn(bundle: str, bf16: bool, channels_last: bool) -> Any:
    from monai.bundle import ConfigParser

    from shared_components.bundle.scaffold import BUNDLES_DIR
    from shared_components.training.autocast import AutocastInferer

    parser = ConfigParser()
    parser.read_config(str(BUNDLES_DIR / bundle / "configs" / "train.yaml"))
    parser["device"] = "$torch.device('cpu')"
    parser["channels_last"], parser["cpu_bf16"] = channels_last, bf16
    torch.manual_seed(0)
    network, loss, optimizer = (parser.get_parsed_content(k) for k in ("network", "loss", "optimizer"))
    network.train()
    patch, batch = parser.get_parsed_content("patch_size"), parser.get_parsed_content("batch_size")
    channels, classes = parser.get_parsed_content("num_channels"), parser.get_parsed_content("num_classes")
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(batch, channels, *patch, generator=generator)
    label = torch.randint(0, classes, (batch, 1, *patch), generator=generator).float()
    inferer = AutocastInferer(parser.get_parsed_content("train#inferer#inferer"), enabled=bf16)

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss(inferer(image, network), label).backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def benchmark_precision(
    bundles: str | Sequence[str] = "hippocampus_mri_segresnet,hippocampus_mri_attention_unet",
    steps: int = 6,
    warmup: int = 2,
    threads: int = 1,
    variants: str | Sequence[str] = tuple(VARIANTS),
    json_out: str | None = None,
) -> dict[str, Any]:
    """Seconds per training step of each bundle in each precision/memory-format variant (see the module docstring).

    Args:
        bundles: bundle folder names (comma-separated or a list).
        steps: measured steps per variant (after ``warmup``).
        warmup: steps per variant not measured (oneDNN picks its kernels on the first).
        threads: torch intra-op threads (the benchmark grid trains with one per run).
        variants: among ``fp32_cl``, ``fp32``, ``bf16_cl``, ``bf16``.
        json_out: also write the result here.
    """
    names = [b.strip() for b in (bundles.split(",") if isinstance(bundles, str) else bundles) if b.strip()]
    chosen = [v.strip() for v in (variants.split(",") if isinstance(variants, str) else variants) if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise ValueError(f"Unknown variants {unknown}: choose among {', '.join(VARIANTS)}.")
    torch.set_num_threads(int(threads))
    capabilities = torch.cpu.get_capabilities()
    result: dict[str, Any] = {
        "threads": int(threads),
        "cpu": {k: capabilities.get(k) for k in ("cpu_name", "amx_bf16", "avx512_bf16", "num_physical_cores")},
        "bundles": {},
    }
    for bundle in names:
        fns = {v: _step_fn(bundle, *VARIANTS[v]) for v in chosen}
        times: dict[str, list[float]] = {v: [] for v in chosen}
        for i in range(warmup + steps):
            for v in chosen if i % 2 == 0 else chosen[::-1]:
                t = fns[v]()
                if i >= warmup:
                    times[v].append(t)
        medians = {v: statistics.median(ts) for v, ts in times.items()}
        base = medians.get("fp32_cl", next(iter(medians.values())))
        result["bundles"][bundle] = {v: {"step_s": m, "speedup": base / m} for v, m in medians.items()}
        print(format_result({"bundles": {bundle: result["bundles"][bundle]}}, header=False), flush=True)
    if json_out:
        from shared_components.evaluation.report import write_json

        write_json(json_out, result)
    return result


def format_result(result: dict[str, Any], header: bool = True) -> str:
    """One line per bundle: seconds per step and the speed-up over float32 channels-last, per variant."""
    lines = ["bundle  " + "  ".join(f"{v}: s/step (speed-up)" for v in VARIANTS)] if header else []
    for bundle, row in result["bundles"].items():
        cells = [f"{v} {m['step_s']:.3f}s ({m['speedup']:.2f}x)" for v, m in row.items()]
        lines.append(f"{bundle}  " + "  ".join(cells))
    return "\n".join(lines)
