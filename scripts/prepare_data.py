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
python scripts/prepare_data.py check work/brats/datalist.json --level full
python scripts/prepare_data.py fingerprint work/hippocampus/datalist.json
"""

import functools
from collections.abc import Callable

from shared_components.cli import run
from shared_components.data.checks import check_datalist_file
from shared_components.data.converters.abdomenct1k import convert_abdomenct1k
from shared_components.data.converters.base import report
from shared_components.data.converters.brats import convert_brats
from shared_components.data.converters.csv_table import convert_table
from shared_components.data.converters.folders import convert_folder
from shared_components.data.converters.lits import convert_lits
from shared_components.data.converters.msd import convert_msd
from shared_components.data.fingerprint import fingerprint as make_fingerprint
from shared_components.data.fingerprint import summary


def _reporting(convert: Callable) -> Callable:
    @functools.wraps(convert)
    def command(*args, **kwargs) -> str:
        return report(convert(*args, **kwargs))

    return command


def check(datalist: str, dataset_dir: str | None = None, level: str = "quick", **kwargs) -> str:
    """Validate a datalist (``--level quick|full``); all problems are listed, each with the case, file and fix.
    Options: ``--num_channels``, ``--num_classes``, ``--label_map``, ``--regions``, ``--allow_empty``."""
    n = check_datalist_file(datalist, dataset_dir, level, **kwargs)
    return f"{n} cases checked ({level}): no problems found"


def fingerprint(datalist: str, dataset_dir: str | None = None, out: str | None = None, max_cases: int | None = None):
    """Dataset statistics (MONAI DataAnalyzer) and recommended spacing, patch size and normalisation, written to
    ``fingerprint.json`` next to the datalist (or ``--out``)."""
    fp = make_fingerprint(datalist, base_dir=dataset_dir, out=out, max_cases=max_cases)
    return summary(fp)


if __name__ == "__main__":
    run(
        {
            "msd": _reporting(convert_msd),
            "lits": _reporting(convert_lits),
            "abdomenct1k": _reporting(convert_abdomenct1k),
            "brats": _reporting(convert_brats),
            "csv": _reporting(convert_table),
            "folder": _reporting(convert_folder),
            "check": check,
            "fingerprint": fingerprint,
        }
    )
