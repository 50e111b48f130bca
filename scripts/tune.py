"""Automated search with Optuna over a bundle's overrides (losses, optimizers, schedulers, any header key), with
pruning on the validation Dice and any number of workers on one database; ablations one factor at a time.

python scripts/tune.py run hippocampus_mri_unet --space space.yaml --trials 20 --study unet_tpe \
    --storage sqlite:///results/hippocampus_mri/runs/tune.db --max_epochs 60      # the same command adds workers
python scripts/tune.py best --study unet_tpe --storage sqlite:///results/hippocampus_mri/runs/tune.db --out tuned.yaml
python scripts/tune.py report --study unet_tpe --storage sqlite:///results/hippocampus_mri/runs/tune.db --eval_fold 1
python scripts/tune.py ablate hippocampus_mri_unet --factors loss_name,optimizer_name,scheduler_name,batch_size_x_epochs \
    --seeds 0,1,2 --max_epochs 60
"""

from shared_components.cli import script

if __name__ == "__main__":
    script("tune")
