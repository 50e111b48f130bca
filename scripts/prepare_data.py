"""Turn a dataset in its official layout (or your own folders/CSV) into a validated, folded datalist.

python scripts/prepare_data.py msd --src ../shared/data/Task04_Hippocampus --dst work/hippocampus --folds 5
python scripts/prepare_data.py lits --src /data/LiTS --dst work/lits
python scripts/prepare_data.py abdomenct1k --src /data/AbdomenCT-1K --dst work/abdomenct1k --center_map centres.csv
python scripts/prepare_data.py brats --src /data/BraTS2021_TrainingData --dst work/brats
python scripts/prepare_data.py brats --src ../shared/data/brats2015_examples --dst work/brats15 --folds 3
python scripts/prepare_data.py csv --src train.csv --dst work/mydata --convention brats2021
python scripts/prepare_data.py folder --src /data/amygdala --dst work/amygdala --fold_mode loco --modality T1
python scripts/prepare_data.py folder --src ../shared/data/abdomen_ct_example --images ct.nii.gz \
    --labels labels_total.nii.gz --select spleen,liver --modality CT --folds 1 --dst work/abdomen
python scripts/prepare_data.py adam --src /data/ADAM --dst /data/ADAM --folds 5
python scripts/prepare_data.py lausanne --src /data/ds003949 --dst work/lausanne --folds 5
python scripts/prepare_data.py check work/brats/datalist.json --level full
python scripts/prepare_data.py fingerprint work/hippocampus/datalist.json
"""

from shared_components.cli import script

if __name__ == "__main__":
    script("prepare")
