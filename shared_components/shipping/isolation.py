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
import sysconfig
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared_components.bundle.runner import bundle_command, output_overrides, run_bundle
from shared_components.paths import named_schema

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
    if not schemas:  # the schema the metadata names (the one the zoo's CI validates against)
        schemas = [named_schema(json.loads((bundle_dir / "configs" / "metadata.json").read_text()))]
    schemas = [Path(s) for s in schemas]
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


def metadata_pins(bundle_dir: str | Path) -> dict[str, str]:
    """``{distribution: version}`` a bundle's metadata pins (torch, monai, numpy and ``required_packages_version``),
    as the zoo CI installs them (``ci/get_bundle_requirements.py``)."""
    meta = json.loads((Path(bundle_dir) / "configs" / "metadata.json").read_text())
    own = {"torch": meta.get("pytorch_version"), "monai": meta.get("monai_version"), "numpy": meta.get("numpy_version")}
    pins = {k: str(v) for k, v in own.items() if v}
    for key in ("optional_packages_version", "required_packages_version"):
        pins.update({k: str(v) for k, v in (meta.get(key) or {}).items()})
    return pins


def _installed(dist: str, python: str | Path = sys.executable) -> str | None:
    code = (
        "import importlib.metadata as m, sys\ntry: print(m.version(sys.argv[1]))\nexcept m.PackageNotFoundError: pass"
    )
    r = subprocess.run([str(python), "-c", code, dist], capture_output=True, text=True)
    return r.stdout.strip().split("+")[0] or None


def pinned_python(bundle_dir: str | Path, venv_dir: str | Path, timeout: float = 900) -> Path:
    """A Python that runs the bundle with exactly the versions its metadata pins: a virtual environment in
    ``venv_dir`` layered over this one (this environment's packages stay importable, after the venv's own), where
    its ``pip`` installs each pin whose version differs from the installed one, with their missing dependencies,
    constrained to the pins. Needs an index (or a pip cache) with those wheels, else raises ``RuntimeError``. Returns
    the venv's python."""
    venv = Path(venv_dir)
    python = venv / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    paths = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([str(python), "-c", paths], capture_output=True, text=True, check=True).stdout.strip()
    base = sysconfig.get_paths()["purelib"]
    Path(site, "_base_environment.pth").write_text(f"import site; site.addsitedir({base!r})\n")
    pins = metadata_pins(bundle_dir)
    todo = [f"{d}=={v}" for d, v in sorted(pins.items()) if _installed(d, python) != v]
    if todo:
        constraints = venv / "pins.txt"
        constraints.write_text("".join(f"{d}=={v}\n" for d, v in sorted(pins.items())))
        cmd = [str(python), "-m", "pip", "install", "-q", "--only-binary=:all:", "-c", str(constraints), *todo]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"cannot install the pinned versions {todo}:\n{(r.stdout + r.stderr)[-2000:]}")
    wrong = {d: (v, _installed(d, python)) for d, v in pins.items() if _installed(d, python) != v}
    if wrong:
        raise RuntimeError(f"pinned environment {venv} has other versions {{dist: (pinned, found)}}: {wrong}")
    return python


def _run(
    python: str | Path,
    bundle_dir: Path,
    configs: Sequence[str],
    overrides: Mapping[str, Any],
    log: Path,
    env: Mapping[str, str],
) -> float:
    """:func:`run_bundle` with another interpreter."""
    if Path(python) == Path(sys.executable):
        return run_bundle(bundle_dir, configs, overrides, log_file=log, env=env)
    cmd = [str(python), *bundle_command(configs, overrides)[1:]]
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=bundle_dir, env={**os.environ, **env}, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise RuntimeError(f"bundle run failed (exit {proc.returncode}) in {bundle_dir}:\n  {' '.join(cmd)}\n{tail}")
    return time.perf_counter() - t0


def smoke_run(
    bundle_dir: str | Path,
    work_dir: str | Path,
    dataset_dir: str | Path,
    datalist: str | Path,
    images: Sequence[str | Path],
    overrides: Mapping[str, Any] | None = None,
    python: str | Path | None = None,
) -> dict[str, Any]:
    """Train (1 epoch), evaluate and infer with an exported bundle through the stock CLI in the isolated
    environment, writing everything below ``work_dir``; returns the wall times, the files written and the versions
    of the pinned packages it ran with. ``python`` (e.g. :func:`pinned_python`) runs it with another interpreter."""
    bundle_dir, work = Path(bundle_dir), Path(work_dir)
    python = python or sys.executable
    cfg = config_names(bundle_dir)
    common = {"dataset_dir": str(dataset_dir), "datalist": str(datalist), **output_overrides(work), **(overrides or {})}
    log = work / "smoke.log"
    env = isolated_env()
    times = {
        "train": _run(python, bundle_dir, [cfg["train"]], {**common, "max_epochs": 1, "val_interval": 1}, log, env),
        "evaluate": _run(python, bundle_dir, [cfg["train"], cfg["evaluate"]], common, log, env),
    }
    infer = {"dataset_dir": str(dataset_dir), "input_data": [str(p) for p in images], "output_dir": str(work / "pred")}
    times["infer"] = _run(python, bundle_dir, [cfg["inference"]], infer, log, env)
    return {
        "seconds": times,
        "checkpoint": work / "models" / "model.pt",
        "metrics": work / "eval" / "metrics.csv",
        "predictions": sorted((work / "pred").glob("*")),
        "log": log,
        "versions": {d: _installed(d, python) for d in metadata_pins(bundle_dir)},
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
