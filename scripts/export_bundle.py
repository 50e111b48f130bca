"""Export a bundle as a self-contained MONAI Model Zoo bundle and verify it with the zoo's own checks, offline.

python scripts/export_bundle.py hippocampus_mri_unet --out dist --zip
python scripts/export_bundle.py hippocampus_mri_unet --out dist --overwrite --smoke ../shared/data/Task04_Hippocampus
python scripts/export_bundle.py spleen_ct_unet --out dist --untrained --format yaml   # initialised weights
python scripts/export_bundle.py hippocampus_mri_unet --out dist --large_files https://example.org/weights
python scripts/export_bundle.py hippocampus_mri_dynunet --out dist --untrained --zoo ../model-zoo   # + the zoo's CI

Writes dist/<name>/ (and dist/<name>_v<version>.zip): vendored code in scripts/, JSON configs, models/model.pt,
models/model.ts and models/model.onnx where the network allows, docs, LICENSE. --large_files URL_BASE moves the
weights to dist/<name>_v<version>_large_files/ (to upload to URL_BASE) and lists them in large_files.yml. The zoo
checks (files, pre-commit rules, metadata against both schemas and its pins, MONAI Label properties, network I/O,
TorchScript, ONNX vs eager) run in a Python that cannot import shared_components; --smoke DIR also trains 1 epoch,
evaluates and infers there on a few cases of DIR with the versions the metadata pins (--smoke_env current: this
environment's). --zoo DIR (default $MONAI_MODEL_ZOO) also runs the zoo's own ci/verify_bundle.py -m full and, when
installed, its black/isort/flake8. Exits 1 when a check fails. The command: shared_components.shipping.command.
"""

from shared_components.cli import script

if __name__ == "__main__":
    script("export")
