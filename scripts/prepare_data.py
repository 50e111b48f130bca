"""Turn a dataset in its official layout into a validated, folded datalist (MONAI decathlon format).

python scripts/prepare_data.py msd --src ../shared/data/Task04_Hippocampus --dst work/hippocampus --folds 5
"""

from pathlib import Path

from shared_components.cli import run
from shared_components.data.datalist import describe
from shared_components.data.msd import convert_msd


def msd(src: str, dst: str, folds: int = 5, seed: int = 0) -> str:
    """MSD task folder (``dataset.json``, ``imagesTr``, ``labelsTr``[, ``imagesTs``]) -> ``<dst>/datalist.json``."""
    path = convert_msd(src, dst, folds=folds, seed=seed)
    return f"wrote {path} (paths relative to {Path(src).resolve()})\n{describe(path)}"


if __name__ == "__main__":
    run({"msd": msd})
