"""Run a bundle through the stock MONAI CLI in a subprocess (used by the demo, cross-validation and benchmark)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

TRAIN = ("configs/train.yaml",)
EVALUATE = ("configs/train.yaml", "configs/evaluate.yaml")
INFER = ("configs/inference.yaml",)
# MLflow 3's set_tracking_uri/set_experiment export these into os.environ, and in a child they win over the bundle's
# own --tracking_uri/experiment_name: a bundle run takes its MLflow store from its config only
MLFLOW_PROCESS_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")
OUTPUT_KEYS = ("run_dir", "ckpt_dir", "log_dir", "output_dir")


def output_overrides(run_dir: str | Path) -> dict[str, str]:
    """Overrides that keep a run's files in ``run_dir``: it is the training run folder (``train_state.pt``,
    ``best_model.pt``, ``config.json``), with the promoted weights in ``models/`` (inside the run folder, so always
    promoted), TensorBoard/history in ``logs/``, evaluation and inference outputs in ``eval/``."""
    run_dir = Path(run_dir)
    dirs = (run_dir, run_dir / "models", run_dir / "logs", run_dir / "eval")
    return dict(zip(OUTPUT_KEYS, map(str, dirs), strict=True))


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
    on_line: Callable[[str], None] | None = None,
) -> float:
    """Run a bundle workflow from its folder; returns the wall time in seconds.

    Output goes to ``log_file`` (appended) or to this process's stdout; ``on_line`` (optional) is also called with
    each output line as it comes (e.g. to show training progress). A log file gets no progress bars
    (``TQDM_DISABLE=1`` unless ``env`` or the environment sets it: tqdm's carriage-return redraws would fill it),
    for any bundle and any of its bars. A failure raises ``RuntimeError`` with the command and the end of the log, so
    the caller can report it and carry on.
    """
    cmd = bundle_command(configs, overrides)
    quiet = {"TQDM_DISABLE": "1"} if log_file is not None else {}
    inherited = {k: v for k, v in os.environ.items() if k not in MLFLOW_PROCESS_VARS}
    full_env = {**quiet, **inherited, **(env or {})}
    t0 = time.perf_counter()
    if on_line is not None:
        full_env.setdefault("PYTHONUNBUFFERED", "1")
    if log_file is None:
        if on_line is not None:
            proc = _streamed(cmd, bundle_dir, full_env, sys.stdout, on_line)
        else:
            proc = subprocess.run(cmd, cwd=bundle_dir, env=full_env)
        tail = ""
    else:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a") as log:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            if on_line is not None:
                proc = _streamed(cmd, bundle_dir, full_env, log, on_line)
            else:
                proc = subprocess.run(cmd, cwd=bundle_dir, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        tail = "\n".join(Path(log_file).read_text().splitlines()[-25:])
    if proc.returncode != 0:
        raise RuntimeError(
            f"bundle run failed (exit {proc.returncode}) in {bundle_dir}:\n  {' '.join(cmd)}\n{tail}".rstrip()
        )
    return time.perf_counter() - t0


def _streamed(
    cmd: list[str], cwd: str | Path, env: Mapping[str, str], sink: Any, on_line: Callable[[str], None]
) -> subprocess.CompletedProcess:
    """Run ``cmd`` with stdout and stderr copied line by line to ``sink`` and passed to ``on_line``."""
    with subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        try:
            for line in proc.stdout:  # type: ignore[union-attr]
                sink.write(line)
                sink.flush()
                on_line(line.rstrip("\n"))
        except KeyboardInterrupt:  # Ctrl-C reached the bundle run too: let it keep its state and stop
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        except BaseException:
            proc.kill()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode)
