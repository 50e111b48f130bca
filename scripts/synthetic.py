"""Write realistic synthetic data in a public dataset's official layout (for trying converters and bundles).

python scripts/synthetic.py msd_spleen work/synthetic/Task09_Spleen --n_train 6 --n_test 2
python scripts/synthetic.py brats work/synthetic/BraTS2021 --n 6
python scripts/synthetic.py amygdala_folders work/synthetic/amygdala --n_per_centre 4
python scripts/synthetic.py list
Layouts: msd_hippocampus, msd_spleen, msd_liver, msd_brain_tumour, lits, abdomenct1k, brats, amygdala_folders,
gandlf_csv (options: the writer's arguments, e.g. --seed).
"""

from shared_components.cli import run
from shared_components.data.synthetic import WRITERS


def synthetic(layout: str, dst: str | None = None, **kwargs) -> str:
    """Write ``layout`` to ``dst``; ``list`` shows the layouts and their writers' documentation."""
    if layout == "list":
        return "\n".join(f"{name}: {fn.__doc__.splitlines()[0]}" for name, fn in WRITERS.items())
    if layout not in WRITERS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(WRITERS)}.")
    if dst is None:
        raise ValueError("give the destination folder: python scripts/synthetic.py <layout> <dst>.")
    return f"wrote {WRITERS[layout](dst, **kwargs)}"


if __name__ == "__main__":
    run(synthetic)
