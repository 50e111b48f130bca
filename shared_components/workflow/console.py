"""What a bundle run shows on its console besides the log: ignite's per-iteration progress bar with the loss, and
the closing line of an inference or evaluation run naming where its outputs went.

The bar is ignite's :class:`ignite.handlers.ProgressBar` (tqdm, on stderr): ``Epoch [3/150]: [12/21] 57%|=====     ,
loss=0.5123 [00:04<00:03]``. A MONAI workflow attaches a handler with ``handler.attach(engine)`` alone, so the
subclass takes what ignite's ``attach`` would be given (the output keys shown) in its constructor; it keeps ignite's
class name, which ``multi_gpu_*.yaml`` use to attach it on rank 0 only (``rank0_handlers``). The configs turn it
off with ``--progress false`` (for log files); :func:`shared_components.bundle.runner.run_bundle` turns tqdm off
when it writes a log file.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ignite.engine import Engine
from ignite.handlers import ProgressBar as _IgniteProgressBar

# the tables :func:`shared_components.evaluation.report.write_evaluation` writes, the summary first
EVALUATION_TABLES = ("metrics_summary.csv", "metrics_per_case.csv", "cases.csv", "metrics_summary.json")


class ProgressBar(_IgniteProgressBar):
    """:class:`ignite.handlers.ProgressBar` showing ``output_keys`` of each iteration's output (the loss).

    Args:
        persist: keep each epoch's finished bar on screen (training: off, the epoch's log line follows it).
        output_keys: keys of the engine output shown after the bar (a MONAI trainer's output is a list of per-sample
            dicts holding the batch ``loss``); ``()`` shows the bar alone.
        tqdm_kwargs: passed to ``tqdm`` (``mininterval``, ``file``, ``disable``, ...).
    """

    def __init__(self, persist: bool = False, output_keys: Sequence[str] = ("loss",), **tqdm_kwargs: Any):
        super().__init__(persist=persist, **tqdm_kwargs)
        self.output_keys = tuple(output_keys)

    def attach(self, engine: Engine, metric_names: Any = None, output_transform: Any = None, **kwargs: Any) -> None:
        if output_transform is None and self.output_keys:
            output_transform = self.shown
        super().attach(engine, metric_names, output_transform, **kwargs)

    def shown(self, output: Any) -> dict[str, str]:
        """``{key: "0.1234"}`` of the output's first sample (MONAI's ``from_engine(keys, first=True)``; a batch
        output that is not decollated, e.g. the detector's, is its own first sample), with the 4 decimals of the
        epoch's log line; non-scalar values are left out."""
        first = output[0] if isinstance(output, list | tuple) and output else output
        if not isinstance(first, Mapping):
            return {}
        shown = {}
        for key in self.output_keys:
            try:
                value = first[key]
                shown[key] = f"{float(value.detach() if hasattr(value, 'detach') else value):.4f}"
            except (KeyError, TypeError, ValueError, RuntimeError):
                continue
        return shown


def is_on(value: Any) -> bool:
    """A yes/no setting as the command line gives it: ``--progress false`` reaches the config as the string
    ``'false'`` (fire reads only ``False`` as a boolean), which ``not`` would take for true."""
    return str(value).strip().lower() not in ("false", "0", "no", "off", "none", "")


def _rank0() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _count(folder: str, pattern: str = "*") -> int:
    return sum(1 for p in glob.glob(os.path.join(folder, pattern)) if os.path.isfile(p))


def report_predictions(output_dir: str, output_postfix: str = "seg") -> str:
    """Print (rank 0) and return ``predictions: <output_dir> (N files)``: the label maps ``*_<postfix>.*`` there."""
    line = f"predictions: {os.path.abspath(output_dir)} ({_count(output_dir, f'*_{output_postfix}.*')} files)"
    if _rank0():
        print(line, flush=True)
    return line


def report_evaluation(output_dir: str, save_predictions: bool = False, output_postfix: str = "seg") -> str:
    """Print (rank 0) and return ``evaluation tables: <output_dir>/metrics_summary.csv (also ...)``, and with
    ``save_predictions`` a second line ``predictions: <output_dir>/predictions (N files)``."""
    folder = os.path.abspath(output_dir)
    tables = [t for t in EVALUATION_TABLES if os.path.isfile(os.path.join(folder, t))]
    if not tables:
        line = f"evaluation tables: none written to {folder} (no cases were evaluated)"
    else:
        also = f" (also {', '.join(tables[1:])})" if len(tables) > 1 else ""
        line = f"evaluation tables: {os.path.join(folder, tables[0])}{also}"
    if is_on(save_predictions):
        pred = os.path.join(folder, "predictions")
        line += f"\npredictions: {pred} ({_count(pred, f'*_{output_postfix}.*')} files)"
    if _rank0():
        print(line, flush=True)
    return line
