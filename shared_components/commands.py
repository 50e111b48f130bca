"""The small commands of ``segbundles`` (and ``scripts/``) that are no other package's function: datalist check and
fingerprint, synthetic data, bundle create/sync/check (the Model Zoo export is ``shipping.command``). Heavy imports
happen inside each command, so ``shared_components.cli`` reads their help from this module without loading MONAI."""

from __future__ import annotations

import inspect
import sys


def check_datalist(
    datalist: str,
    dataset_dir: str | None = None,
    level: str = "quick",
    num_channels: int | None = None,
    num_classes: int | None = None,
    label_map: str | None = None,
    regions: str | None = None,
    allow_empty: bool = False,
) -> str:
    """Validate a datalist: every problem listed at once, each with its case, file and fix.

    Args:
        datalist: the datalist JSON.
        dataset_dir: the folder its paths are relative to (default: its ``dataset_dir``, else its folder).
        level: ``quick`` (file headers, seconds) or ``full`` (voxels too: label values, NaNs, empty labels).
        num_channels: channels each image must have (default: the datalist's ``num_channels``).
        num_classes: label values allowed are 0 to ``num_classes - 1`` (default: from the datalist's labels).
        label_map: raw label value -> class, e.g. ``"{6: 1, 1: 2}"`` (default: the datalist's).
        regions: brain-tumour regions or a convention name (``brats2021``, ``msd``...; default: the datalist's).
        allow_empty: accept label maps without any foreground.
    """
    from shared_components.data.checks import check_datalist_file

    n = check_datalist_file(datalist, dataset_dir, level, num_channels, num_classes, label_map, regions, allow_empty)
    return f"{n} cases checked ({level}): no problems found"


def fingerprint(datalist: str, dataset_dir: str | None = None, out: str | None = None, max_cases: int | None = None):
    """Dataset statistics (MONAI DataAnalyzer) and the recommended spacing, patch size and normalisation.

    Args:
        datalist: the datalist JSON.
        dataset_dir: the folder its paths are relative to (default: its ``dataset_dir``, else its folder).
        out: where to write the fingerprint (default: ``fingerprint.json`` next to the datalist).
        max_cases: analyse at most this many cases (default: all).
    """
    from shared_components.data.fingerprint import fingerprint as make_fingerprint
    from shared_components.data.fingerprint import summary

    return summary(make_fingerprint(datalist, base_dir=dataset_dir, out=out, max_cases=max_cases))


def synthetic(layout: str, dst: str | None = None, **options) -> str:
    """Synthetic data in a public dataset's official layout, to try converters and bundles.

    Args:
        layout: the layout to write (``list`` shows them all, each with its description).
        dst: the folder to write it to.
        **options: the layout writer's arguments, e.g. ``--n 6`` or ``--seed 1``.
    """
    from shared_components.cli import columns, first_sentence, parse_doc
    from shared_components.data.synthetic import WRITERS

    if layout == "list":
        rows = []
        for name, fn in WRITERS.items():
            params = list(inspect.signature(fn).parameters.values())[1:]
            flags = " ".join(f"--{p.name} {p.default}" for p in params if p.default is not p.empty)
            rows.append((name, first_sentence(parse_doc(fn.__doc__)[0]) + (f" Options: {flags}." if flags else "")))
        return columns(rows)
    if layout not in WRITERS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(WRITERS)}.")
    if dst is None:
        raise ValueError("give the destination folder: synthetic <layout> <dst>.")
    return f"wrote {WRITERS[layout](dst, **options)}"


def create_bundle(dataset: str, model: str, overwrite: bool = False) -> str:
    """Create ``bundles/<dataset>_<model>/`` from a dataset spec and a model spec.

    The specs are ``shared_components/bundle/specs/{datasets,models}/<name>.yaml``. Configs, headers included,
    follow the specs through ``sync`` in any case; what ``--overwrite`` adds is new metadata and docs.

    Args:
        dataset: a dataset spec name, e.g. ``spleen_ct``, or ``all``.
        model: a model spec name, e.g. ``segresnet``, or ``all`` (every missing pair is created).
        overwrite: regenerate existing bundles from the specs (never one with trained weights).
    """
    from shared_components.bundle import scaffold

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


def sync_bundles(*bundles: str) -> str:
    """Rewrite the derived files of bundles (train.yaml header from the specs, standard workflow, other configs).

    Args:
        bundles: bundle names (default: every bundle).
    """
    from shared_components.bundle import scaffold

    dirs = [scaffold.BUNDLES_DIR / b for b in bundles] or scaffold.all_bundles()
    changed = [f for d in dirs for f in scaffold.sync(d)]
    return "\n".join(["updated:"] + changed) if changed else f"{len(dirs)} bundle(s) already in sync"


def ship_weights(bundle: str, run: str, force: bool = False, note: str | None = None) -> str:
    """Ship a finished benchmark run in its bundle: best weights to ``models/model.pt``, the run's measured numbers,
    training time, hardware and reproducing command to ``metadata.json`` and the model card, its history and
    learning curves to ``docs/``.

    Args:
        bundle: bundle name or folder (e.g. ``hippocampus_mri_segresnet``).
        run: the run folder, ``<out>/<dataset>/runs/<bundle>/fold_<k>`` of ``scripts/benchmark.py run``, or an
            ensemble's (``runs/<dataset>_ensemble_<a>+<b>/fold_<k>`` of ``benchmark.py ensemble``; the bundle is its
            first member's, the others go to ``models/ensemble/``).
        force: replace weights the bundle already ships.
        note: a sentence for the card that the run's records cannot give (e.g. other work sharing the machine).
    """
    from shared_components.bundle import weights
    from shared_components.experiments.runs import resolve_bundle

    try:
        written = weights.ship_run(resolve_bundle(bundle), run, force=force, note=note)
    except FileExistsError as e:
        raise ValueError(str(e)) from e
    return "wrote:\n" + "\n".join(str(p) for p in written)


def check_bundles(*bundles: str) -> str:
    """List bundle files that differ from what the specs and the template give; exits 1 when any drifted.

    A deliberate difference of one bundle goes under ``bundles:`` in its dataset spec, with a ``reason``.

    Args:
        bundles: bundle names (default: every bundle).
    """
    from shared_components.bundle import scaffold

    dirs = [scaffold.BUNDLES_DIR / b for b in bundles] or scaffold.all_bundles()
    drift = [f for d in dirs for f in scaffold.check(d)]
    if drift:
        hint = "run `segbundles new-bundle sync`; declare a deliberate header difference under `bundles:`"
        print(f"out of sync ({hint} in the dataset spec):\n" + "\n".join(drift), file=sys.stderr)
        sys.exit(1)
    return f"{len(dirs)} bundle(s) in sync"
