"""Serve bundles from a real MONAI Label server (``monaibundle`` app) and prove inference and training work.

Run inside the MONAI Label environment (``bash scripts/monailabel_check.sh`` creates it and calls this):

1. a temporary app: MONAI Label's own ``monaibundle`` sample app, with a copy of the bundle in ``model/<bundle>``
   and, by default, its Model Zoo export (``scripts/export_bundle.py``) in ``model/<zoo name>`` (the repository's
   bundle and its ``models/model.pt`` are never written);
2. a studies folder of real labelled cases (images plus ``labels/final/``), as MONAI Label's datastore expects;
3. ``monailabel start_server`` on 127.0.0.1; ``GET /info/`` must list each model with the labels of its
   ``channel_def``; ``POST /infer/<model>`` must return a label map with the image's shape and only declared labels,
   overlapping the reference label (Dice is reported); ``POST /train/<model>`` with ``max_epochs=1`` must write new
   weights to ``models/model.pt`` of the app's copy, which then load into the network and serve a new inference.

A detector (an inference config with ``detector``, e.g. ``aneurysm_mra_retinanet``) is served by its export only:
MONAI Label takes a bundle for a detector when its folder name contains "detection" (the export's name does, the
repository's folder does not, so MONAI Label would run it as a segmentation network). ``POST /infer`` must return
boxes (6 numbers each, on the preprocessed grid) and their labels; ``/train`` is not called: MONAI Label's trainer
gives a detector boxes read from 3D Slicer markup JSON labels, and this detector derives its boxes from label maps.
Studies for a detector come from an ADAM-layout folder (``<case>/pre/TOF.nii.gz``) given as ``dataset``.

Prints a JSON summary (timings included) and exits non-zero on the first failed step, with the server log's tail.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import fire
import numpy as np

from shared_components.bundle.scaffold import BUNDLES_DIR
from shared_components.paths import data_root

SKIP = shutil.ignore_patterns("logs", "eval", "cache", "runs", "__pycache__", "*.ts", "*.onnx")


class CheckFailed(RuntimeError):
    """A step of the MONAI Label check failed."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sample_app(dest: Path) -> Path:
    """Copy MONAI Label's ``monaibundle`` sample app (shipped in the monailabel package's data files)."""
    candidates = [Path(sys.prefix) / "monailabel" / "sample-apps" / "monaibundle"]
    import monailabel

    candidates.append(Path(monailabel.__file__).resolve().parent.parent / "sample-apps" / "monaibundle")
    for c in candidates:
        if (c / "main.py").is_file():
            shutil.copytree(c, dest, ignore=shutil.ignore_patterns("__pycache__", "model"))
            (dest / "model").mkdir(exist_ok=True)
            return dest
    raise FileNotFoundError(f"MONAI Label's monaibundle sample app not found in {candidates}; is monailabel installed?")


def _adam_studies(dest: Path, dataset: Path, n: int) -> list[str]:
    """``n`` TOF-MRA images of an ADAM-layout folder as ``<case>.nii.gz`` (unlabelled studies); returns the ids."""
    images = sorted(dataset.glob("*/pre/TOF.nii.gz"))[:n]
    if not images:
        raise FileNotFoundError(f"no <case>/pre/TOF.nii.gz (ADAM layout) in {dataset}.")
    dest.mkdir(parents=True)
    for img in images:
        shutil.copy(img, dest / f"{img.parent.parent.name}.nii.gz")
    return [img.parent.parent.name for img in images]


def _studies(dest: Path, dataset: Path, n: int) -> list[str]:
    """``n`` real labelled cases laid out as MONAI Label's local datastore expects; returns the image ids."""
    if not (dataset / "imagesTr").is_dir():
        return _adam_studies(dest, dataset, n)
    images = sorted((dataset / "imagesTr").glob("*.nii.gz"))[-n:]
    if len(images) < n:
        raise FileNotFoundError(f"need {n} labelled cases in {dataset}/imagesTr, found {len(images)}.")
    (dest / "labels" / "final").mkdir(parents=True)
    for img in images:
        shutil.copy(img, dest / img.name)
        shutil.copy(dataset / "labelsTr" / img.name, dest / "labels" / "final" / img.name)
    return [img.name[: -len(".nii.gz")] for img in images]


class Server:
    """``monailabel start_server`` in its own process group, logging to a file."""

    def __init__(self, app: Path, studies: Path, models: list[str], log: Path, port: int | None = None):
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        # the ``monailabel`` launcher runs whatever ``python`` is on PATH: call this interpreter's module instead
        cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies)]
        for k, v in {"models": ",".join(models), "zoo_source": "local", "sam2": "false", "preload": "false"}.items():
            cmd += ["--conf", k, v]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false",
            "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
            "MONAI_LABEL_TRACKING_ENABLED": "false",
        }
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        import requests

        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise CheckFailed(f"monailabel server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                r = requests.get(f"{self.url}/info/", timeout=5)
                if r.status_code == 200:
                    return r.json()
            except requests.ConnectionError:
                pass
            time.sleep(2)
        raise CheckFailed(f"monailabel server not ready after {timeout:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def _dice(pred: np.ndarray, ref: np.ndarray, labels: list[int]) -> float:
    scores = []
    for c in labels:
        p, r = pred == c, ref == c
        denom = p.sum() + r.sum()
        scores.append(2.0 * np.logical_and(p, r).sum() / denom if denom else 1.0)
    return float(np.mean(scores))


def _infer(server: Server, model: str, image_id: str, studies: Path, out: Path) -> dict[str, Any]:
    import nibabel as nib
    import requests

    t0 = time.monotonic()
    r = requests.post(f"{server.url}/infer/{model}", params={"image": image_id, "output": "image"}, timeout=600)
    seconds = time.monotonic() - t0
    if r.status_code != 200:
        raise CheckFailed(f"POST /infer/{model} -> {r.status_code}: {r.text[:500]}\n{server.tail()}")
    out.write_bytes(r.content)
    pred = np.asarray(nib.load(out).dataobj)
    image = nib.load(studies / f"{image_id}.nii.gz")
    ref = np.asarray(nib.load(studies / "labels" / "final" / f"{image_id}.nii.gz").dataobj)
    if pred.shape != image.shape:
        raise CheckFailed(f"{model}: label map shape {pred.shape} != image shape {image.shape}")
    values = sorted(int(v) for v in np.unique(pred))
    if not set(values) <= set(range(int(ref.max()) + 1)) or values == [0]:
        raise CheckFailed(f"{model}: label map values {values} are not a segmentation of labels 0..{int(ref.max())}")
    labels = [int(v) for v in np.unique(ref) if v > 0]
    return {"seconds": round(seconds, 2), "labels": values, "dice": round(_dice(pred, ref, labels), 4)}


def _detect(server: Server, model: str, image_id: str) -> dict[str, Any]:
    """``POST /infer/<model>`` of a detector: its boxes (``[x0, y0, z0, x1, y1, z1]`` each) and their labels."""
    import requests

    t0 = time.monotonic()
    r = requests.post(f"{server.url}/infer/{model}", params={"image": image_id, "output": "json"}, timeout=600)
    seconds = time.monotonic() - t0
    if r.status_code != 200:
        raise CheckFailed(f"POST /infer/{model} -> {r.status_code}: {r.text[:500]}\n{server.tail()}")
    result = r.json()
    boxes, labels = result.get("box"), result.get("label")
    if not isinstance(boxes, list) or not isinstance(labels, list) or len(boxes) != len(labels):
        raise CheckFailed(f"{model}: no boxes with labels in the response: {json.dumps(result)[:500]}")
    if any(len(b) != 6 or not all(lo <= hi for lo, hi in zip(b[:3], b[3:], strict=True)) for b in boxes):
        raise CheckFailed(f"{model}: boxes are not [x0, y0, z0, x1, y1, z1]: {boxes[:3]}")
    return {"seconds": round(seconds, 2), "boxes": boxes, "labels": labels}


def is_detector(bundle: Path) -> bool:
    """Whether the bundle's inference config defines a ``detector`` (what MONAI Label runs for detection)."""
    from monai.bundle import ConfigParser

    config = next(p for p in (bundle / "configs" / f"inference.{e}" for e in ("json", "yaml")) if p.is_file())
    return "detector" in ConfigParser.load_config_file(config)


def _train(server: Server, model: str, weights: Path) -> dict[str, Any]:
    import requests

    before = _sha256(weights)
    mtime = weights.stat().st_mtime
    params = {"max_epochs": 1, "val_split": 0.25, "device": "cpu", "multi_gpu": False, "pretrained": True}
    t0 = time.monotonic()
    r = requests.post(f"{server.url}/train/{model}", params={"run_sync": "true"}, json=params, timeout=1800)
    seconds = time.monotonic() - t0
    if r.status_code != 200:
        raise CheckFailed(f"POST /train/{model} -> {r.status_code}: {r.text[:500]}\n{server.tail()}")
    if _sha256(weights) == before or weights.stat().st_mtime <= mtime:
        raise CheckFailed(f"{model}: 1-epoch training did not write new weights to {weights}\n{server.tail(80)}")
    return {"seconds": round(seconds, 2), "weights": str(weights), "sha256_before": before[:12]}


def _network_loads(bundle: Path, weights: Path) -> int:
    """Load ``weights`` into the bundle's ``network_def`` (strict); returns the number of tensors."""
    import torch
    from monai.bundle import ConfigParser

    config = next(p for p in (bundle / "configs" / f"inference.{e}" for e in ("json", "yaml")) if p.is_file())
    sys.path.insert(0, str(bundle))
    try:
        parser = ConfigParser()
        parser.read_config(config)
        net = parser.get_parsed_content("network_def")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    finally:
        sys.path.remove(str(bundle))
        for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
            del sys.modules[name]
    return len(state)


def check(
    bundle: str = "hippocampus_mri_unet",
    export: bool = True,
    cases: int = 8,
    keep: str | None = None,
    timeout: float = 300.0,
    dataset: str = "Task04_Hippocampus",
) -> dict[str, Any]:
    """Run the check for ``bundle`` (a name in ``bundles/`` or a bundle folder; and its Model Zoo export unless
    ``export=False``) on ``cases`` studies of ``dataset`` (a folder of the data root, or a path); ``keep`` keeps the
    app, studies and server log in that folder (default: a temporary folder, removed on success)."""
    src = Path(bundle) if Path(bundle).is_dir() else BUNDLES_DIR / bundle
    if not (src / "configs" / "inference.yaml").is_file():
        raise FileNotFoundError(f"no bundle {bundle!r} in {BUNDLES_DIR} (nor a bundle folder of that path).")
    detector = is_detector(src)
    if detector and not export:
        raise ValueError(f"{src.name} is a detector: MONAI Label serves it from its export (export=True).")
    if not (src / "models" / "model.pt").is_file():
        raise FileNotFoundError(f"{src}/models/model.pt missing: MONAI Label needs trained weights.")
    work = Path(keep).resolve() if keep else Path(tempfile.mkdtemp(prefix="monailabel_check_"))
    if keep and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    summary: dict[str, Any] = {"bundle": src.name, "work_dir": str(work), "models": {}}

    app = _sample_app(work / "app")
    models = {} if detector else {src.name: shutil.copytree(src, app / "model" / src.name, ignore=SKIP)}
    if export:
        from shared_components.shipping.export import export_bundle

        t0 = time.monotonic()
        res = export_bundle(src, work / "export", torchscript=False, onnx=False)
        models[res.name] = shutil.copytree(res.path, app / "model" / res.name)
        summary["export_seconds"] = round(time.monotonic() - t0, 1)
    studies = work / "studies"
    ids = _studies(studies, Path(dataset) if Path(dataset).is_dir() else data_root() / dataset, cases)

    server = Server(app, studies, list(models), work / "server.log")
    try:
        t0 = time.monotonic()
        info = server.wait_ready(timeout)
        summary["server_start_seconds"] = round(time.monotonic() - t0, 1)
        for name, folder in models.items():
            if name not in info.get("models", {}) or name not in info.get("trainers", {}):
                raise CheckFailed(f"{name} missing from /info/ models or trainers: {json.dumps(info)[:1000]}")
            labels = info["models"][name].get("labels")
            meta = json.loads((folder / "configs" / "metadata.json").read_text())
            channel_def = next(iter(meta["network_data_format"]["outputs"].values()))["channel_def"]
            expected = {v.lower(): int(k) for k, v in channel_def.items() if v.lower() != "background"}
            if labels != expected:
                raise CheckFailed(f"{name}: /info/ labels {labels} != channel_def {expected}")
            result: dict[str, Any] = {"labels": labels}
            if detector:
                result["infer"] = _detect(server, name, ids[0])
                result["image"] = ids[0]
                summary["models"][name] = result
                print(f"{name}: {json.dumps(result)}", file=sys.stderr, flush=True)
                continue
            result["infer"] = _infer(server, name, ids[0], studies, work / f"{name}_infer.nii.gz")
            weights = folder / "models" / "model.pt"
            result["train"] = _train(server, name, weights)
            result["train"]["tensors_loaded"] = _network_loads(folder, weights)
            result["infer_after_train"] = _infer(server, name, ids[0], studies, work / f"{name}_infer2.nii.gz")
            summary["models"][name] = result
            print(f"{name}: {json.dumps(result)}", file=sys.stderr, flush=True)
    except BaseException:
        server.stop()
        print(f"failed; app, studies and server log kept in {work}", file=sys.stderr)
        raise
    server.stop()
    summary["total_seconds"] = round(time.monotonic() - t_start, 1)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def main() -> None:
    try:
        summary = fire.Fire(check, name="monailabel_check", serialize=lambda s: json.dumps(s, indent=2))
    except (CheckFailed, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    del summary


if __name__ == "__main__":
    main()
