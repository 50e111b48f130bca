"""What an epoch costs beyond its compute, per augmentation mode, side by side in one process (README "Data pipeline
and batch augmentation"): seconds per epoch, pure compute on prepared batches, data wait, augmentation and overhead
per iteration, peak RAM/VRAM. The same command as ``segbundles benchmark pipeline``.

python scripts/benchmark_pipeline.py hippocampus_mri_unet --json work/pipeline/hippocampus_cpu.json
python scripts/benchmark_pipeline.py hippocampus_mri_unet --augmentation batch --device cpu --threads 1
python scripts/benchmark_pipeline.py spleen_ct_unet --device cuda --amp true --epochs 3   # synthetic spleen data
"""

from shared_components.cli import SEGBUNDLES, run

if __name__ == "__main__":
    run(SEGBUNDLES.commands["benchmark"].commands["pipeline"], "benchmark_pipeline.py")
