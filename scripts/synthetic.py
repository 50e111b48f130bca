"""Write realistic synthetic data in a public dataset's official layout (for trying converters and bundles).

python scripts/synthetic.py msd_spleen work/synthetic/Task09_Spleen --n_train 6 --n_test 2
python scripts/synthetic.py brats work/synthetic/BraTS2021 --n 6
python scripts/synthetic.py amygdala_folders work/synthetic/amygdala --n_per_centre 4
python scripts/synthetic.py adam work/synthetic/ADAM --n 10
python scripts/synthetic.py list
Layouts: msd_hippocampus, msd_spleen, msd_liver, msd_brain_tumour, lits, abdomenct1k, brats, amygdala_folders,
gandlf_csv, adam, lausanne (options: the writer's arguments, e.g. --seed).
"""

from shared_components.cli import script

if __name__ == "__main__":
    script("synthetic")
