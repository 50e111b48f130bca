#!/usr/bin/env bash
# GPU checks of the data pipeline (README "Data pipeline and batch augmentation"), ready for a machine with a CUDA
# GPU and this repository's .venv built with a CUDA torch. From the repository root:
#
#   bash scripts/gpu_checks.sh [OUT_DIR]        # default work/gpu_checks; about 10 min on one GPU
#
# 1. the batched ops on the GPU: every preset on a BraTS-sized batch (4 channels, 3 region channels, 128^3): label
#    channels stay binary, a patch is augmented alike in any batch and in two runs (the same device, the same
#    seeds), pinned copies and the GPU generators work, and the CPU and GPU results of the spatial ops agree where
#    they must (flips, centre crops);
# 2. one epoch of hippocampus_mri_unet through the stock CLI in batch mode with AMP;
# 3. the pipeline benchmark, both modes side by side, AMP on: hippocampus_mri_unet (real data) and spleen_ct_unet
#    (synthetic MSD spleen, 96^3 patches); the JSON files land in OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-work/gpu_checks}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"

echo "== 1. batched ops on the GPU"
"$PY" - <<'EOF'
import time

import numpy as np
import torch

from shared_components.transforms import batch as B

dev = torch.device("cuda")
patch = [128, 128, 128]
for name in B.PRESETS:
    aug = B.BatchAugmentation(patch, name, (0, 1, 2))
    g = torch.Generator().manual_seed(0)
    image = torch.randn((4, 4, *aug.input_size), generator=g)
    label = (torch.rand((4, 3, *aug.input_size), generator=g) > 0.7).float()
    seeds = [3, 5, 7, 11]
    image_d, label_d = image.pin_memory().to(dev, non_blocking=True), label.pin_memory().to(dev, non_blocking=True)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = aug(image_d, label_d, seeds)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    again = aug(image_d, label_d, seeds)
    part = aug(image_d[2:], label_d[2:], seeds[2:])
    assert out[0].shape == (4, 4, *patch) and out[1].shape == (4, 3, *patch), name
    assert set(out[1].unique().tolist()) <= {0.0, 1.0}, f"{name}: region channels not binary"
    assert torch.equal(out[0], again[0]) and torch.equal(out[1], again[1]), f"{name}: not reproducible on the GPU"
    torch.testing.assert_close(part[0], out[0][2:], atol=1e-5, rtol=1e-5)
    assert torch.equal(part[1], out[1][2:]), f"{name}: labels depend on the batch"
    print(f"{name:8s} {dt * 1000:7.1f} ms for 4 x 4 x 128^3 on {dev}")
mirror = B.Mirror(axes=(0, 1, 2))
x = torch.randn(3, 2, 16, 16, 16)
params = [(0,), None, (1, 2)]
cpu = mirror(x.clone(), None, params)[0]
gpu = mirror(x.to(dev), None, params)[0].cpu()
assert torch.equal(cpu, gpu), "flips differ between CPU and GPU"
print("batched ops on the GPU: ok")
EOF

echo "== 2. one epoch in batch mode with AMP through the stock CLI"
"$PY" - "$OUT" <<'EOF'
import json
import sys
from pathlib import Path

from shared_components.bundle.runner import TRAIN, output_overrides, run_bundle
from shared_components.bundle.scaffold import BUNDLES_DIR
from shared_components.data.converters.msd import msd_datalist
from shared_components.paths import dataset_dir

out = Path(sys.argv[1]) / "cli_batch_amp"
data = dataset_dir("Task04_Hippocampus")
cases = msd_datalist(data, folds=5, seed=0)["training"][:12]
for i, e in enumerate(cases):
    e["fold"] = 0 if i < 2 else 1
out.mkdir(parents=True, exist_ok=True)
(out / "datalist.json").write_text(json.dumps({"training": cases, "test": []}))
overrides = {"dataset_dir": data, "datalist": str(out / "datalist.json"), "max_epochs": 1, "val_interval": 1}
overrides |= {"amp": True, "augmentation_args#mode": "batch", "augmentation_args#augmentation": "nnunet"}
overrides |= {"check_data": "quick", "progress": False, **output_overrides(out / "run")}
seconds = run_bundle(BUNDLES_DIR / "hippocampus_mri_unet", TRAIN, overrides, log_file=out / "train.log")
assert (out / "run" / "models" / "model.pt").is_file()
print(f"one epoch in batch mode with AMP: ok ({seconds:.0f} s, log {out / 'train.log'})")
EOF

echo "== 3. pipeline benchmark, both modes, AMP on"
"$PY" scripts/benchmark_pipeline.py hippocampus_mri_unet --device cuda --amp true --epochs 3 --warmup 1 \
    --progress false --json "$OUT/hippocampus_mri_unet_cuda.json"
"$PY" scripts/benchmark_pipeline.py spleen_ct_unet --device cuda --amp true --epochs 3 --warmup 1 --cases 8 \
    --progress false --json "$OUT/spleen_ct_unet_cuda.json"
echo "GPU checks done: $OUT"
