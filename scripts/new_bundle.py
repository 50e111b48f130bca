"""Create a bundle from a dataset and a model spec, or keep every bundle's configs equal to what its specs and the
template generate (the train.yaml header included: declare a per-bundle difference under ``bundles:`` in the
dataset spec, with a ``reason``, instead of editing the header; see ``shared_components/bundle/scaffold.py``).

python scripts/new_bundle.py create spleen_ct segresnet    # bundles/spleen_ct_segresnet/ from the two specs
python scripts/new_bundle.py create all medformer          # every dataset with a model (existing bundles are kept)
python scripts/new_bundle.py sync                          # rewrite the derived configs (headers too) of every bundle
python scripts/new_bundle.py check                         # list drifted files (exit 1 if any)
"""

import sys

from shared_components.bundle import scaffold
from shared_components.cli import run


def create(dataset: str, model: str, overwrite: bool = False) -> str:
    """New bundle(s) ``bundles/<dataset>_<model>/`` from ``shared_components/bundle/specs/{datasets,models}/``.

    ``all`` for the dataset or the model creates every missing pair; ``--overwrite`` regenerates existing bundles
    from the specs (never one with trained weights). Configs, headers included, follow the specs through ``sync``
    in any case; what ``--overwrite`` adds is new metadata and docs.
    """
    datasets = scaffold.spec_names("dataset") if dataset == "all" else [dataset]
    models = scaffold.spec_names("model") if model == "all" else [model]
    single = len(datasets) * len(models) == 1
    lines = []
    for d in datasets:
        for m in models:
            bundle = scaffold.BUNDLES_DIR / f"{d}_{m}"
            trained = (bundle / "models" / "model.pt").exists()
            if not single and (bundle / "configs" / "train.yaml").exists() and (not overwrite or trained):
                lines.append(f"kept    {bundle} ({'trained' if trained else 'exists'})")
                continue
            try:
                lines.append(f"created {scaffold.create(d, m, overwrite=overwrite)}")
            except FileExistsError as e:
                raise ValueError(str(e)) from e
    return "\n".join(lines)


def sync(*bundles: str) -> str:
    """Rewrite the derived files (train.yaml header from the specs, standard workflow, inference.yaml, shared
    configs) of the given or all bundles."""
    dirs = [scaffold.BUNDLES_DIR / b for b in bundles] or scaffold.all_bundles()
    changed = [f for d in dirs for f in scaffold.sync(d)]
    return "\n".join(["updated:"] + changed) if changed else f"{len(dirs)} bundle(s) already in sync"


def check(*bundles: str) -> str:
    """List derived files that differ from the specs and the template (a hand-edited header too); exits 1 when any
    drifted."""
    dirs = [scaffold.BUNDLES_DIR / b for b in bundles] or scaffold.all_bundles()
    drift = [f for d in dirs for f in scaffold.check(d)]
    if drift:
        hint = "run `python scripts/new_bundle.py sync`; declare a deliberate header difference under `bundles:`"
        hint += " in the dataset spec"
        print(f"out of sync ({hint}):\n" + "\n".join(drift), file=sys.stderr)
        sys.exit(1)
    return f"{len(dirs)} bundle(s) in sync"


if __name__ == "__main__":
    run({"create": create, "sync": sync, "check": check})
