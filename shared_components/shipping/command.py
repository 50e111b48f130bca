"""The ``export`` command (``segbundles export``, ``scripts/export_bundle.py``): export a bundle to the MONAI Model
Zoo format and verify it. Heavy imports happen inside, so the command's help loads no MONAI."""

from __future__ import annotations

import sys
from pathlib import Path


def export(
    bundle: str,
    out: str = "dist",
    zip: bool = False,  # noqa: A002 - the CLI flag is --zip
    format: str = "json",  # noqa: A002 - the CLI flag is --format
    name: str | None = None,
    torchscript: bool = True,
    onnx: bool = True,
    untrained: bool = False,
    overwrite: bool = False,
    large_files: str | None = None,
    smoke: str | None = None,
    smoke_env: str = "pinned",
    zoo: str | None = None,
) -> None:
    """Export a bundle to the MONAI Model Zoo format, verified by the zoo's checks without shared_components.

    Writes ``<out>/<name>/`` (vendored code in ``scripts/``, JSON configs, ``models/model.pt``, ``model.ts`` and
    ``model.onnx`` where the network allows, docs saying exactly what ships, LICENSE). The checks (files, pre-commit
    rules, metadata against both schemas and its pins, MONAI Label properties, network I/O, TorchScript, ONNX vs
    eager) run in a Python that cannot import shared_components; exits 1 when one fails.

    Args:
        bundle: a bundle name under ``bundles/`` or a bundle folder.
        out: the output folder.
        zip: also write ``<out>/<name>_v<version>.zip``.
        format: config format of the export: ``json`` (the zoo's) or ``yaml``.
        name: the export's folder name in ``out`` (default: ``<dataset>_<modality>_<model>_segmentation``); a plain
            name, never a path.
        torchscript: ship ``models/model.ts`` when it reproduces the eager network.
        onnx: ship ``models/model.onnx`` when onnxruntime reproduces the eager network.
        untrained: ship initialised weights when the bundle has no ``models/model.pt`` (to test the export).
        overwrite: replace an existing export.
        large_files: a URL base: the weights leave the folder for ``<out>/<name>_v<version>_large_files/`` (upload
            them there) and ``large_files.yml`` lists them, as zoo bundles do.
        smoke: a data folder: also train 1 epoch, evaluate and infer with the export on a few of its cases.
        smoke_env: ``pinned`` (the versions the metadata pins, installed by pip in a venv over this environment;
            needs PyPI or a pip cache) or ``current`` (this environment's versions).
        zoo: a model-zoo checkout or bare git clone (default ``$MONAI_MODEL_ZOO``): also run its
            ``ci/verify_bundle.py -m full``, and its black/isort/flake8 when installed (``$ZOO_LINT_PYTHON``).
    """
    import json
    import tempfile

    from shared_components.bundle.scaffold import BUNDLES_DIR
    from shared_components.shipping import isolation, zoo_ci
    from shared_components.shipping.export import NOT_SCRIPTABLE, export_bundle

    src = Path(bundle) if Path(bundle).is_dir() else BUNDLES_DIR / bundle
    if not src.is_dir():
        raise FileNotFoundError(f"no bundle {bundle!r}: give a folder or one of {BUNDLES_DIR}/*.")
    if smoke_env not in ("pinned", "current"):
        raise ValueError(f"--smoke_env must be 'pinned' or 'current', got {smoke_env!r}.")
    zoo_path = zoo_ci.zoo_dir(zoo)
    if zoo is not None and zoo_path is None:
        raise FileNotFoundError(f"--zoo {zoo}: not a model-zoo checkout (ci/verify_bundle.py) or bare git clone.")
    result = export_bundle(
        src, out, name, zip, format, torchscript, onnx, untrained, overwrite=overwrite, large_files=large_files
    )
    print(f"exported {src.name} -> {result.path}" + (f" ({result.zip})" if result.zip else ""))
    isolation.prove_isolated()  # raises unless the checks below ran where shared_components cannot be imported
    print(f"vendored {len(result.vendored)} files into scripts/; checked without the shared_components package")
    if result.large_files:
        print(f"weights to upload to {large_files}: {result.large_files}/ (listed in large_files.yml)")
    for info in result.exports.values():
        print(f"  {info['file']}: {'shipped, ' + info.get('method', '') if info['ok'] else 'not shipped'}")
    for check in result.checks:
        print(f"  {check}")
    for note in result.notes:
        print(f"  note: {note}")
    failed = len(isolation.failures(result.checks))
    if smoke:
        with tempfile.TemporaryDirectory() as tmp:
            python = isolation.pinned_python(result.path, Path(tmp) / "venv") if smoke_env == "pinned" else None
            source = result.path / "configs" / "datalist.json"
            source = source if source.is_file() else Path(smoke) / "datalist.json"  # BraTS-like: made with the data
            datalist = isolation.smoke_datalist(source, Path(tmp) / "dl.json")
            case = json.loads(datalist.read_text())["training"][-1]["image"]
            image = [str(Path(smoke) / c) for c in case] if isinstance(case, list) else str(Path(smoke) / case)
            res = isolation.smoke_run(result.path, Path(tmp) / "run", smoke, datalist, [image], python=python)
            times = ", ".join(f"{k} {v:.0f} s" for k, v in res["seconds"].items())
            print(f"  smoke run without shared_components ({smoke_env} versions): {times}")
            print(f"    {len(res['predictions'])} prediction(s); versions {res['versions']}")
    if zoo_path is not None:
        r = zoo_ci.verify_bundle(result.path, zoo_path, exclude_torchscript=result.network in NOT_SCRIPTABLE)
        print(f"  zoo ci/verify_bundle.py -m full: {'passed' if r.returncode == 0 else 'FAILED'}")
        if r.returncode != 0:
            print("\n".join(r.stdout.splitlines()[-30:]))
            failed += 1
        if zoo_ci.format_tools() is None:
            pins = " ".join(f"{k}=={v}" for k, v in zoo_ci.FORMAT_TOOLS.items())
            print(f"  zoo format check skipped: install {pins} (or set $ZOO_LINT_PYTHON)")
        else:
            for tool, p in zoo_ci.format_check(result.path, zoo_path).items():
                print(f"  zoo {tool}: {'passed' if p.returncode == 0 else 'FAILED'}")
                if p.returncode != 0:
                    print((p.stdout + p.stderr)[-3000:])
                    failed += 1
    if failed:
        print(f"{failed} zoo check(s) failed", file=sys.stderr)
        sys.exit(1)
