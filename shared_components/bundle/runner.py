"""Run a bundle through the stock MONAI CLI in a subprocess (used by the demo, cross-validation and benchmark)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TRAIN = ("configs/train.yaml",)
EVALUATE = ("configs/train.yaml", "configs/evaluate.yaml")
INFER = ("configs/inference.yaml",)
OUTPUT_KEYS = ("ckpt_dir", "log_dir", "output_dir")


def output_overrides(run_dir: str | Path) -> dict[str, str]:
    """Overrides that keep a run's files in ``run_dir``: checkpoints in ``models/``, TensorBoard/history in ``logs/``,
    evaluation and inference outputs in ``eval/``."""
    run_dir = Path(run_dir)
    return dict(zip(OUTPUT_KEYS, (str(run_dir / "models"), str(run_dir / "logs"), str(run_dir / "eval")), strict=True))


def _cli_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ",".join(repr(v) if isinstance(v, str) else str(v) for v in value) + "]"
    return str(value)


def bundle_command(configs: Sequence[str], overrides: Mapping[str, Any] | None = None) -> list[str]:
    """``python -m monai.bundle run --config_file "['a.yaml','b.yaml']" --key value ...``."""
    files = "[" + ",".join(f"'{c}'" for c in configs) + "]" if len(configs) > 1 else configs[0]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files]
    for k, v in (overrides or {}).items():
        cmd += [f"--{k}", _cli_value(v)]
    return cmd


def run_bundle(
    bundle_dir: str | Path,
    configs: Sequence[str],
    overrides: Mapping[str, Any] | None = None,
    log_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> float:
    """Run a bundle workflow from its folder; returns the wall time in seconds.

    Output goes to ``log_file`` (appended) or to this process's stdout. A failure raises ``RuntimeError`` with the
    command and the end of the log, so the caller can report it and carry on.
    """
    cmd = bundle_command(configs, overrides)
    full_env = {**os.environ, **(env or {})}
    t0 = time.perf_counter()
    if log_file is None:
        proc = subprocess.run(cmd, cwd=bundle_dir, env=full_env)
        tail = ""
    else:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a") as log:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            proc = subprocess.run(cmd, cwd=bundle_dir, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        tail = "\n".join(Path(log_file).read_text().splitlines()[-25:])
    if proc.returncode != 0:
        raise RuntimeError(
            f"bundle run failed (exit {proc.returncode}) in {bundle_dir}:\n  {' '.join(cmd)}\n{tail}".rstrip()
        )
    return time.perf_counter() - t0
