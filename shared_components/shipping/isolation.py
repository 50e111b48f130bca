"""Prove an exported bundle stands alone: the Model Zoo's offline checks and a train/evaluate/infer smoke run, both
in subprocesses that cannot import ``shared_components``.

The guard is a ``sitecustomize.py`` on ``PYTHONPATH`` that puts an import blocker first on ``sys.meta_path``, so
every Python process started with :func:`isolated_env` (including DataLoader workers and ``torchrun`` children)
fails on ``import shared_components`` while torch, monai and the rest of the environment stay importable.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared_components.bundle.runner import output_overrides, run_bundle
from shared_components.paths import schemas_dir

GUARD = '''"""Import guard: this environment must run bundles without the monai-seg-bundles source package."""
import sys


class _NoSharedComponents:
    def find_spec(self, name, path=None, target=None):
        if name == "shared_components" or name.startswith("shared_components."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: exported bundles must not need it)", name=name)
        return None


sys.meta_path.insert(0, _NoSharedComponents())
'''


@functools.cache
def guard_dir() -> Path:
    """A folder (per process) holding the import guard and the standalone zoo verification script."""
    folder = Path(tempfile.mkdtemp(prefix="no_shared_components_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    (folder / "sitecustomize.py").write_text(GUARD)
    shutil.copy(Path(__file__).with_name("zoo_offline_checks.py"), folder / "zoo_offline_checks.py")
    return folder


def isolated_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the import guard on ``PYTHONPATH`` (and nothing else there)."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = str(guard_dir())
    return env


def prove_isolated(env: Mapping[str, str] | None = None) -> str:
    """Run ``import shared_components`` in ``env`` (default :func:`isolated_env`); returns the error it must raise."""
    env = dict(env or isolated_env())
    cmd = [sys.executable, "-c", "import shared_components"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if r.returncode == 0:
        raise AssertionError("shared_components is importable in the isolated environment: the guard does not work.")
    last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    if "ModuleNotFoundError" not in last:
        raise AssertionError(f"unexpected failure importing shared_components in the isolated environment: {last}")
    return last


@dataclass
class Check:
    check: str
    ok: bool
    level: str
    detail: str
    seconds: float = 0.0

    def __str__(self) -> str:
        mark = "ok  " if self.ok else ("FAIL" if self.level == "error" else "warn")
        return f"[{mark}] {self.check}: {self.detail}"


def verify_export(
    bundle_dir: str | Path, schemas: Sequence[str | Path] | None = None, export: Sequence[str] = ()
) -> tuple[list[Check], dict[str, dict[str, Any]]]:
    """Run the zoo's offline checks on ``bundle_dir`` in an isolated subprocess, after writing the ``export``
    formats (``'ts'``, ``'onnx'``) there; returns every check's result and what each export did."""
    bundle_dir = Path(bundle_dir).resolve()
    schemas = [Path(s) for s in schemas] if schemas else sorted(schemas_dir().glob("meta_schema_*.json"))
    if not schemas:
        raise FileNotFoundError(f"no Model Zoo metadata schemas in {schemas_dir()}; set SEG_SHARED_DIR.")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, str(guard_dir() / "zoo_offline_checks.py"), str(bundle_dir), "--report", str(report)]
        cmd += ["--schemas", *map(str, schemas)]
        if export:
            cmd += ["--export", *export]
        r = subprocess.run(cmd, env=isolated_env(), cwd=tmp, capture_output=True, text=True)
        if r.returncode != 0 or not report.is_file():
            raise RuntimeError(f"zoo verification crashed (exit {r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
        data = json.loads(report.read_text())
    return [Check(**c) for c in data["checks"]], data.get("exports", {})


def failures(checks: Sequence[Check]) -> list[Check]:
    """The checks that failed at error level."""
    return [c for c in checks if not c.ok and c.level == "error"]


def config_names(bundle_dir: str | Path) -> dict[str, str]:
    """``{'train': 'configs/train.json', ...}``: the config files of a bundle, whichever format it uses."""
    out = {}
    for name in ("train", "evaluate", "inference", "multi_gpu_train", "multi_gpu_evaluate"):
        for ext in ("json", "yaml", "yml"):
            if (Path(bundle_dir) / "configs" / f"{name}.{ext}").is_file():
                out[name] = f"configs/{name}.{ext}"
                break
    return out


def smoke_run(
    bundle_dir: str | Path,
    work_dir: str | Path,
    dataset_dir: str | Path,
    datalist: str | Path,
    images: Sequence[str | Path],
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (1 epoch), evaluate and infer with an exported bundle through the stock CLI in the isolated
    environment, writing everything below ``work_dir``; returns the wall times and the files written."""
    bundle_dir, work = Path(bundle_dir), Path(work_dir)
    cfg = config_names(bundle_dir)
    common = {
        "dataset_dir": str(dataset_dir),
        "datalist": str(datalist),
        **output_overrides(work),
        **(overrides or {}),
    }
    log = work / "smoke.log"
    env = isolated_env()
    times = {
        "train": run_bundle(
            bundle_dir, [cfg["train"]], {**common, "max_epochs": 1, "val_interval": 1}, log_file=log, env=env
        ),
        "evaluate": run_bundle(bundle_dir, [cfg["train"], cfg["evaluate"]], common, log_file=log, env=env),
    }
    infer = {
        "dataset_dir": str(dataset_dir),
        "input_data": [str(p) for p in images],
        "output_dir": str(work / "pred"),
    }
    times["infer"] = run_bundle(bundle_dir, [cfg["inference"]], infer, log_file=log, env=env)
    return {
        "seconds": times,
        "checkpoint": work / "models" / "model.pt",
        "metrics": work / "eval" / "metrics.csv",
        "predictions": sorted((work / "pred").glob("*")),
        "log": log,
    }


def smoke_datalist(datalist: str | Path, dest: str | Path, n_train: int = 3, fold: int = 0) -> Path:
    """A small datalist for :func:`smoke_run`: ``n_train`` training cases outside ``fold`` and one case in it."""
    data = json.loads(Path(datalist).read_text())
    training = data.get("training", [])
    val = [e for e in training if int(e.get("fold", -1)) == fold][:1]
    train = [e for e in training if int(e.get("fold", -1)) != fold][:n_train]
    if not val or not train:
        raise ValueError(f"{datalist} needs training cases in fold {fold} and outside it for a smoke run.")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps({"training": train + val}, indent=4))
    return dest
