"""Create a bundle from a dataset and a model spec, or keep every bundle's shared parts in sync with the template.

python scripts/new_bundle.py create hippocampus_mri unet   # bundles/hippocampus_mri_unet/
python scripts/new_bundle.py sync                          # rewrite the derived configs of every bundle
python scripts/new_bundle.py check                         # list drifted files (exit 1 if any)
"""

import sys

from shared_components.bundle import scaffold
from shared_components.cli import run


def sync(*bundles: str) -> str:
    """Rewrite the derived files (standard workflow, inference.yaml, shared configs) of the given or all bundles."""
    dirs = [scaffold.BUNDLES_DIR / b for b in bundles] or scaffold.all_bundles()
    changed = [f for d in dirs for f in scaffold.sync(d)]
    return "\n".join(["updated:"] + changed) if changed else f"{len(dirs)} bundle(s) already in sync"


def check(*bundles: str) -> str:
    """List derived files that differ from the template; exits 1 when any drifted."""
    dirs = [scaffold.BUNDLES_DIR / b for b in bundles] or scaffold.all_bundles()
    drift = [f for d in dirs for f in scaffold.check(d)]
    if drift:
        print("out of sync (run `python scripts/new_bundle.py sync`):\n" + "\n".join(drift), file=sys.stderr)
        sys.exit(1)
    return f"{len(dirs)} bundle(s) in sync"


if __name__ == "__main__":
    run({"sync": sync, "check": check})
