"""A cross-model ensemble: several trained bundles of one dataset, their probabilities averaged, on new images or
scored on a validation fold like any single model.

python scripts/ensemble.py hippocampus_mri_attention_unet,hippocampus_mri_segresnet,hippocampus_mri_medformer \
    --input_data path/to/images --out work/ensemble
python scripts/ensemble.py hippocampus_mri_unet,hippocampus_mri_segresnet --fold 0 --out work/ensemble_fold0
"""

from shared_components.cli import script

if __name__ == "__main__":
    script("ensemble")
