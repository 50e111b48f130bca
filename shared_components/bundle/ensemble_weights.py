"""Shipping a benchmark ensemble (``benchmark.py ensemble``) in its first member's bundle.

``new_bundle.py ship <bundle> <results>/runs/<dataset>_ensemble_<a>+<b>/fold_<k>`` puts member ``a``'s run weights in
``models/model.pt`` and every other member's in ``models/ensemble/<bundle>.pt``, next to ``<bundle>.json`` (that
bundle's ``network_def`` and the ids it references, so the bundle stays self-contained); ``inference.yaml`` then
averages them (:func:`~shared_components.evaluation.ensemble.ensemble_members`). The card and metadata give the
ensemble's own scores on fold ``k``, which every member was trained without.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from shared_components.evaluation.ensemble import MEMBERS_DIR
from shared_components.files import StagedFiles
from shared_components.paths import CLI


def member_config(bundle_dir: Path) -> dict[str, Any]:
    """``network_def`` of a bundle's ``inference.yaml`` with the ids it references (recursively) and ``imports``:
    a config that builds that network alone."""
    from shared_components.bundle.scaffold import with_references

    config = yaml.safe_load((Path(bundle_dir) / "configs" / "inference.yaml").read_text())
    return {k: config[k] for k in ("imports", *with_references(config, ["network_def"])) if k in config}


def member_files(members: list[dict[str, Any]]) -> dict[str, tuple[Path, str]]:
    """``{bundle: (weights file, network config text)}`` of the other members (their run facts), read before
    anything is written so a member that cannot be read leaves the bundle as it was."""
    return {
        m["record"]["bundle"]: (
            m["weights"],
            json.dumps(member_config(Path(m["record"]["bundle_dir"])), indent=4) + "\n",
        )
        for m in members
    }


def write_members(bundle: Path, members: dict[str, tuple[Path, str]], stage: StagedFiles) -> list[Path]:
    """``models/ensemble/`` holding exactly ``members`` (:func:`member_files`), stale members removed, written as
    part of ``stage``."""
    folder = bundle / MEMBERS_DIR
    for old in folder.glob("*"):
        if old.stem not in members:
            stage.remove(old)
    written = []
    for name, (weights, config) in members.items():
        written += [stage.copy(weights, folder / f"{name}.pt"), stage.write_text(folder / f"{name}.json", config)]
    return written


def ensemble_text(facts: dict[str, Any]) -> dict[str, str]:
    """The card's words for an ensemble: what the weights are, how long each member trained, how to reproduce."""
    from shared_components.bundle.weights import REPRODUCE_OUT, reproduce_command
    from shared_components.experiments.runs import model_name

    members = [facts["primary"], *facts["members"]]
    short = [model_name(m["record"]["bundle"], facts["settings"]["name"]) for m in members]
    others = ", ".join(
        f"`{MEMBERS_DIR}/{m['record']['bundle']}.pt` ({s})" for m, s in zip(members[1:], short[1:], strict=True)
    )
    what = (
        f"an ensemble of {len(members)} benchmark runs, each trained without fold {facts['fold']}: `models/model.pt` "
        f"({short[0]}) and {others}, whose probabilities `inference.yaml` averages; MONAI Label and the TorchScript "
        "export serve `models/model.pt` alone"
    )
    lengths = "; ".join(
        f"{s} {m['record']['epochs']} epochs ({m['record']['seconds_per_epoch']:.1f} s each, "
        f"{'final weights' if m['best'].get('choice') == 'final' else 'best checkpoint'})"
        for m, s in zip(members, short, strict=True)
    )
    settings = facts["settings"]
    grid = reproduce_command(facts["primary"], [m["record"]["bundle"] for m in members])
    results = f"{REPRODUCE_OUT}/{settings['name']}"
    ensemble = f"{CLI} benchmark ensemble {results} --members {','.join(short)}"
    return {"what": what, "lengths": lengths, "command": f"{grid}\n{ensemble}"}
