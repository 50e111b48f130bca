"""Where bundle authoring files live and how a bundle's ``train.yaml`` is laid out (header, marker, standard part).

A leaf module: ``scaffold`` and ``model_card`` both import it, so neither has to import the other for these.
"""

from __future__ import annotations

from shared_components.paths import PACKAGE_DIR, REPO_ROOT

TEMPLATE_DIR = PACKAGE_DIR / "bundle" / "template"
SPECS_DIR = PACKAGE_DIR / "bundle" / "specs"
BUNDLES_DIR = REPO_ROOT / "bundles"
# first characters of the line in configs/train.yaml (and inference.yaml) where the template's standard part starts
MARKER = "# ---- standard "
# bundles with a workflow of their own, not the segmentation template (no dataset x model pair, nothing derived):
# ``new_bundle.py sync`` leaves every file of theirs alone and ``check`` has nothing to compare; name -> why
STANDALONE_BUNDLES = {
    "aneurysm_mra_retinanet": "anchor-based 3D detector (MONAI RetinaNet): boxes instead of label maps, its own "
    "train/evaluate/inference workflow and FROC evaluation, hand-written configs"
}
# files every bundle holds as verbatim copies of the template
COPIED = (
    "configs/evaluate.yaml",
    "configs/multi_gpu_train.yaml",
    "configs/multi_gpu_evaluate.yaml",
    "configs/logging.conf",
    "LICENSE",
)


def split_standard(text: str, path: str = "train.yaml") -> tuple[str, str]:
    """Split a config into its bundle-specific header and the standard part starting at the marker line."""
    i = text.find("\n" + MARKER)
    if i < 0:
        raise ValueError(f"{path} has no '{MARKER}...' marker line separating the bundle header from the template.")
    return text[: i + 1], text[i + 1 :]
