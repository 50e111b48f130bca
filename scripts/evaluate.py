"""Evaluate a trained bundle on new labelled data in one command: convert it (every case an evaluation case, fold 0)
into a work folder, run the bundle's evaluation through the stock MONAI CLI, print the table and where it went.

python scripts/evaluate.py hippocampus_mri_unet --data ../shared/data/Task04_Hippocampus --out work/eval_hippocampus
python scripts/evaluate.py hippocampus_mri_unet --data /data/my_cases --images images --labels labels --modality T1
python scripts/evaluate.py abdomen_ct_unet --data /data/AbdomenCT-1K --layout abdomenct1k --save_predictions
"""

from shared_components.cli import script

if __name__ == "__main__":
    script("evaluate")
