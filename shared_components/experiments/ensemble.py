"""A cross-model ensemble (``segbundles ensemble``): several trained bundles of one dataset, their probabilities
averaged (:class:`~shared_components.evaluation.ensemble.BundleEnsemble`), run through the first bundle's stock
configs: ``inference.yaml`` on new images, or ``[train.yaml, evaluate.yaml]`` on a validation fold (the usual
tables, so an ensemble is scored exactly like a single model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LOG_FILE = "ensemble.log"


def _members(bundles: str | list[str], checkpoints: str | list[str] | None) -> tuple[list[Path], list[str | None]]:
    from shared_components.experiments.runs import resolve_bundle

    names = [b.strip() for b in bundles.split(",")] if isinstance(bundles, str) else list(bundles)
    dirs = [resolve_bundle(b) for b in names if b]
    if len(dirs) < 2:
        raise ValueError(f"an ensemble needs at least two bundles, got {names}: --bundles a,b[,c...]")
    ckpts = [c.strip() for c in checkpoints.split(",")] if isinstance(checkpoints, str) else checkpoints
    ckpts = [str(Path(c).resolve()) if c else None for c in (ckpts or [None] * len(dirs))]
    if len(ckpts) != len(dirs):
        raise ValueError(f"--checkpoints gives {len(ckpts)} files for {len(dirs)} bundles (one per bundle, in order).")
    for d, c in zip(dirs, ckpts, strict=True):
        weights = Path(c) if c else d / "models" / "model.pt"
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} not found: train {d.name} first, or give its weights in --checkpoints.")
    return dirs, ckpts


def ensemble(
    bundles: str,
    input_data: str | None = None,
    fold: int | None = None,
    out: str = "work/ensemble",
    checkpoints: str | None = None,
    tta_flip_axes: list[int] | None = None,
    datalist: str | None = None,
    dataset_dir: str | None = None,
    member_overrides: list[dict[str, Any]] | None = None,
) -> Path:
    """Average the probabilities of several trained bundles of one dataset: segment new images, or score a fold.

    Args:
        bundles: comma-separated bundle names or folders (two or more, of one dataset spec), e.g.
            ``hippocampus_mri_attention_unet,hippocampus_mri_segresnet,hippocampus_mri_medformer``.
        input_data: images to segment (folder, glob, file or datalist): label maps go to ``<out>/predictions``.
        fold: instead, evaluate the ensemble on this validation fold of the first bundle's datalist: the usual
            tables (metrics per case, summary with CIs) go to ``<out>/eval``.
        out: the output folder.
        checkpoints: comma-separated weights, one per bundle (default: each bundle's ``models/model.pt``).
        tta_flip_axes: also mirror at test time along these spatial axes (see ``tta_flip_axes`` of the configs).
        datalist: another datalist for ``--fold``.
        dataset_dir: another data folder.
        member_overrides: the config overrides each member's weights were trained with, one mapping per bundle
            (``'[{"network_def#init_filters": 16}, {}]'``), for weights of runs trained with another network size
            than the bundle's own (a benchmark's ``--overrides``).
    """
    from shared_components.bundle.runner import EVALUATE, INFER, run_bundle
    from shared_components.evaluation.ensemble import check_same_preprocessing

    if (input_data is None) == (fold is None):
        raise ValueError("give either --input_data (segment new images) or --fold (evaluate on a validation fold).")
    dirs, ckpts = _members(bundles, checkpoints)
    member_overrides = [dict(o or {}) for o in (member_overrides or [{}] * len(dirs))]
    if len(member_overrides) != len(dirs):
        raise ValueError(f"--member_overrides gives {len(member_overrides)} mappings for {len(dirs)} bundles.")
    check_same_preprocessing(dirs, member_overrides)
    out_dir = Path(out).resolve()
    members = f"[{', '.join(repr(str(d)) for d in dirs)}], @device, @multilabel, {ckpts!r}, {member_overrides!r}"
    axes = list(tta_flip_axes or [])
    overrides: dict[str, Any] = {"tta_flip_axes": axes}
    if dataset_dir:
        overrides["dataset_dir"] = str(Path(dataset_dir).resolve())
    inferer = f"$shared_components.evaluation.mirrored(shared_components.evaluation.BundleEnsemble({members}), "
    if fold is None:
        overrides |= {
            "evaluator#inferer": inferer + "@tta_flip_axes, @multilabel)",
            "handlers#0#_disabled_": True,  # the CheckpointLoader: every member loaded its own weights
            "input_data": str(Path(input_data).resolve()) if Path(input_data).exists() else input_data,
            "output_dir": str(out_dir / "predictions"),
        }
        configs, what = INFER, f"predictions: {out_dir / 'predictions'}"
    else:
        overrides |= {
            "validate#evaluator#inferer": inferer + "@tta_flip_axes, @multilabel, @augmentation_args.get('flip_axes'))",
            "validate#handlers#0#_disabled_": True,
            "eval_checkpoint": str(ckpts[0] or dirs[0] / "models" / "model.pt"),
            "fold": int(fold),
            "output_dir": str(out_dir / "eval"),
        }
        if datalist:
            overrides["datalist"] = str(Path(datalist).resolve())
        configs, what = EVALUATE, f"evaluation tables: {out_dir / 'eval'}"
    print(f"ensemble of {', '.join(d.name for d in dirs)} through {dirs[0].name}'s {' + '.join(configs)}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_bundle(dirs[0], configs, overrides, out_dir / LOG_FILE)
    print(f"{what}\nlog: {out_dir / LOG_FILE}")
    return out_dir
