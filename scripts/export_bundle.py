"""Export a bundle as a self-contained MONAI Model Zoo bundle and verify it with the zoo's own checks, offline.

python scripts/export_bundle.py hippocampus_mri_unet --out dist --zip
python scripts/export_bundle.py hippocampus_mri_unet --out dist --overwrite --smoke ../shared/data/Task04_Hippocampus
python scripts/export_bundle.py spleen_ct_unet --out dist --untrained --format yaml   # initialised weights

Writes dist/<name>/ (and dist/<name>_v<version>.zip): vendored code in scripts/, JSON configs, models/model.pt,
models/model.ts and models/model.onnx where the network allows, docs, LICENSE. The zoo checks (files, metadata
against both schemas, inference properties, network I/O, TorchScript, ONNX vs eager) run in a Python that cannot
import shared_components; --smoke DIR also trains 1 epoch, evaluates and infers there on a few cases of DIR.
Exits 1 when a check fails.
"""

import json
import sys
import tempfile
from pathlib import Path

from shared_components.bundle.scaffold import BUNDLES_DIR
from shared_components.cli import run
from shared_components.shipping import isolation
from shared_components.shipping.export import export_bundle


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
    smoke: str | None = None,
) -> None:
    """Export ``bundle`` (a name in bundles/ or a folder) to ``out``; see the module docstring."""
    src = Path(bundle) if Path(bundle).is_dir() else BUNDLES_DIR / bundle
    if not src.is_dir():
        raise FileNotFoundError(f"no bundle {bundle!r}: give a folder or one of {BUNDLES_DIR}/*.")
    result = export_bundle(src, out, name, zip, format, torchscript, onnx, untrained, overwrite=overwrite)
    print(f"exported {src.name} -> {result.path}" + (f" ({result.zip})" if result.zip else ""))
    print(f"vendored {len(result.vendored)} files into scripts/; isolation: {isolation.prove_isolated()}")
    for info in result.exports.values():
        print(f"  {info['file']}: {'shipped, ' + info.get('method', '') if info['ok'] else 'not shipped'}")
    for check in result.checks:
        print(f"  {check}")
    for note in result.notes:
        print(f"  note: {note}")
    if smoke:
        with tempfile.TemporaryDirectory() as tmp:
            datalist = isolation.smoke_datalist(result.path / "configs" / "datalist.json", Path(tmp) / "dl.json")
            case = json.loads(datalist.read_text())["training"][-1]["image"]
            image = [str(Path(smoke) / c) for c in case] if isinstance(case, list) else str(Path(smoke) / case)
            images = [image]
            res = isolation.smoke_run(result.path, Path(tmp) / "run", smoke, datalist, images)
            times = ", ".join(f"{k} {v:.0f} s" for k, v in res["seconds"].items())
            print(f"  smoke run without shared_components: {times}; {len(res['predictions'])} prediction(s)")
    if not result.ok:
        print(f"{len(isolation.failures(result.checks))} zoo check(s) failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run(export, name="export_bundle")
