"""Warnings a bundle run would print that its user can do nothing about, filtered by their exact text.

Every config calls :func:`quiet_warnings` in ``initialize``, after ``check_invocation``. Each filter names the
warning's exact message, category and the code that raises it, so any other warning still shows; a warning with a
cause in this repository is fixed there instead of being listed here.

Not filtered, on purpose: MONAI's ``parsing config_file ...: ... Only proceed if this config is from a source you
trust`` (a security notice of ``monai.bundle run``, printed before any config code runs) and the ``Detected
deprecated name`` notices of ``metadata.json`` (fixed in the metadata).
"""

from __future__ import annotations

import warnings

# (message regex matched at the start of the warning text, category, where it is raised)
FILTERS: tuple[tuple[str, type[Warning], str], ...] = (
    # monai.engines.SupervisedTrainer(amp=True) builds `torch.cuda.amp.GradScaler()`, deprecated since torch 2.4:
    # printed by every GPU training, fixed only in MONAI
    (r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated", FutureWarning, "monai.engines.trainer"),
)


def quiet_warnings() -> None:
    """Install :data:`FILTERS` (idempotent: ``warnings.filterwarnings`` drops a duplicate filter)."""
    for message, category, _ in FILTERS:
        warnings.filterwarnings("ignore", message=message, category=category)
