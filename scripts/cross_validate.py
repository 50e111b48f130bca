"""Cross-validate a bundle: train and evaluate each fold with the stock bundle CLI (resumable), then write
cross_validation.md/.csv and the pooled per-case metrics; optionally segment new images with the fold ensemble.

python scripts/cross_validate.py hippocampus_mri_unet --folds 0,1,2,3,4 --time_budget 20
python scripts/cross_validate.py hippocampus_mri_unet --folds 0,1 --max_epochs 50 --out work/cv \
    --ensemble_input ../shared/data/Task04_Hippocampus/imagesTs
"""

from shared_components.cli import script

if __name__ == "__main__":
    script("cv")
