"""What an epoch costs beyond its compute, for each augmentation mode side by side in one process.

:func:`benchmark_pipeline` builds a bundle's training workflow once per mode (``augmentation_args#mode`` ``sample``
and ``batch``), on its real data (hippocampus: ``$SEG_DATA_DIR/Task04_Hippocampus`` with the shipped split) or on
synthetic data in the dataset's official layout (``shared_components.data.synthetic``), and runs their epochs in
turns (A, B, B, A, ...; ignite's ``interrupt`` pauses a trainer after an epoch's last iteration), so a machine
shared with other work slows both alike. For each mode and epoch it records

* ``epoch_s``: the epoch's wall time, from its start to its last iteration's handlers (the epoch-end work,
  validation and the run folder's checkpoint, is ``epoch_end_s``, apart);
* ``compute_s``: forward, backward and optimizer step alone on batches of that epoch prepared beforehand (already
  on the device and augmented), times the iterations of an epoch (the weights, optimizer and random states are
  restored afterwards, so training goes on as if it had not happened);
* ``step_s``: forward, backward and step as they ran inside the epoch (CPU; the same time window as ``epoch_s``, so
  ``epoch_over_step`` is the ratio least exposed to a load that changes between epochs);
* per iteration: ``data_wait_s`` (the trainer waiting for the data loader), ``augmentation_s`` (``prepare_batch``:
  the copy to the device and, in ``batch`` mode, the augmentation; CUDA events, no synchronisation),
  ``handlers_s`` (handlers of the iteration's end, plus MONAI's decollation of batch and output) and
  ``overhead_s`` (``(epoch_s - compute_s) / iterations``: everything that is not compute);
* ``peak_ram_mb`` (this process's resident memory: both workflows together) and ``peak_vram_mb`` (CUDA memory
  allocated during the epoch, above what was allocated at its start).

The medians over the measured epochs (after ``warmup`` epochs) are reported with ``epoch_over_compute`` per mode and
``batch_over_sample`` (ratios measured in the same process, which is what to compare on a loaded machine).
"""

from __future__ import annotations

import contextlib
import copy
import json as jsonlib
import logging
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from shared_components.transforms.batch import MODES

logger = logging.getLogger(__name__)

HIPPOCAMPUS = "Task04_Hippocampus"


# ---- data --------------------------------------------------------------------------------------------------------


def _dataset_of(bundle: str) -> str:
    from shared_components.bundle.scaffold import BUNDLES_DIR

    for spec in sorted((BUNDLES_DIR.parent / "shared_components" / "bundle" / "specs" / "datasets").glob("*.yaml")):
        if bundle.startswith(spec.stem + "_"):
            return spec.stem
    return bundle.rsplit("_", 1)[0]


def synthetic_data(dataset: str, root: str | Path, cases: int = 6) -> tuple[Path, Path, dict[str, Any]]:
    """``cases`` synthetic labelled cases of ``dataset`` (e.g. ``spleen_ct``) in its official layout under
    ``root``, converted by its converter (3 folds; fold 0 validates): (dataset folder, datalist, overrides)."""
    from shared_components.data.converters import abdomenct1k, brats, folders, lits, msd
    from shared_components.data.synthetic import ct, hippocampus, mri

    src = Path(root) / dataset
    overrides: dict[str, Any] = {}
    if dataset == "hippocampus_mri":
        hippocampus.write_msd_hippocampus(src, n_train=cases, n_test=0, seed=0)
        datalist = msd.convert_msd(src, src, folds=3, seed=0)
    elif dataset == "spleen_ct":
        ct.write_msd_spleen(src, n_train=cases, n_test=0, seed=1)
        datalist = msd.convert_msd(src, src, folds=3, seed=0)
    elif dataset == "liver_ct":
        ct.write_lits(src, n=cases, seed=2)
        datalist = lits.convert_lits(src, src, folds=3, seed=0)
    elif dataset == "abdomen_ct":
        ct.write_abdomenct1k(src, n=cases, seed=3)
        datalist = abdomenct1k.convert_abdomenct1k(src, src, folds=3, seed=0)
    elif dataset == "brats_mri":
        mri.write_brats(src, n=cases, seed=4)
        datalist = brats.convert_brats(src, src, folds=3, seed=0)
    elif dataset == "amygdala_mri":
        mri.write_amygdala_folders(src, centres=("centre_a", "centre_b"), n_per_centre=max(1, cases // 2), seed=5)
        datalist = folders.convert_folder(src, src, folds=3, seed=0)
    else:
        raise ValueError(f"no synthetic data for dataset {dataset!r}: give --dataset_dir and --datalist.")
    return src, Path(datalist), overrides


def _data(bundle: str, root: Path, cases: int, dataset_dir: str | None, datalist: str | None) -> dict[str, Any]:
    from shared_components.paths import dataset_dir as default_dir

    if dataset_dir or datalist:
        out = {"dataset_dir": dataset_dir} if dataset_dir else {}
        return out | ({"datalist": datalist} if datalist else {})
    dataset = _dataset_of(bundle)
    if dataset == "hippocampus_mri" and (Path(default_dir(HIPPOCAMPUS)) / "dataset.json").is_file():
        return {}  # the bundle's defaults: the real data and the shipped split
    src, path, overrides = synthetic_data(dataset, root, cases)
    return {"dataset_dir": str(src), "datalist": str(path), **overrides}


# ---- measuring one workflow --------------------------------------------------------------------------------------


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Timer:
    """Seconds between pairs of marks: CUDA events on a CUDA device (read after the epoch, no synchronisation in
    between), else the wall clock."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.pairs: list[Any] = []

    def start(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def stop(self, started: Any) -> None:
        self.pairs.append((started, self.start()))

    def total(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return sum(a.elapsed_time(b) for a, b in self.pairs) / 1000.0
        return sum(b - a for a, b in self.pairs)


class _TimedPrepare:
    """The trainer's ``prepare_batch``, timed, keeping the first ``keep`` prepared batches for the compute pass."""

    def __init__(self, prepare: Any, device: torch.device, keep: int):
        self.prepare, self.keep = prepare, keep
        self.timer = _Timer(device)
        self.kept: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, batchdata: Any, *args: Any, **kwargs: Any) -> Any:
        started = self.timer.start()
        out = self.prepare(batchdata, *args, **kwargs)
        self.timer.stop(started)
        if len(self.kept) < self.keep:
            self.kept.append((out[0], out[1]))
        return out


class _Run:
    """One mode's workflow, its trainer paused after each epoch, with what each epoch cost."""

    def __init__(self, mode: str, workflow: Any, keep: int):
        from ignite.engine import Events
        from monai.engines import IterationEvents

        self.mode, self.workflow = mode, workflow
        self.trainer = trainer = workflow.parser.get_parsed_content("train#trainer")
        self.device = torch.device(trainer.state.device or "cpu")
        self.keep = keep
        self.epochs: list[dict[str, Any]] = []
        self.peak_rss = 0.0
        self._marks: dict[str, float] = {}
        self._acc: dict[str, float] = {}
        self._timed: _TimedPrepare | None = None
        mark = self._marks

        def first(event: Any, fn: Any) -> None:  # before the bundle's own handlers of that event
            trainer.add_event_handler(event, fn)
            handlers = trainer._event_handlers[event]
            handlers.insert(0, handlers.pop())

        def epoch_started(engine: Any) -> None:
            self._timed = _TimedPrepare(self._prepare, self.device, self.keep)
            engine.prepare_batch = self._timed
            self._acc = dict.fromkeys(("data_wait", "handlers", "process", "model"), 0.0)
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
                mark["vram0"] = torch.cuda.memory_allocated(self.device)
            mark["cpu"] = time.process_time()
            mark["epoch"] = now = time.perf_counter()
            if self.epochs and "resume" in mark:  # the previous epoch's end ran since this run() began
                self.epochs[-1]["epoch_end_s"] = now - mark.pop("resume")

        def add(key: str, since: str) -> None:
            self._acc[key] += time.perf_counter() - mark[since]

        self._prepare = trainer.prepare_batch
        first(Events.EPOCH_STARTED, epoch_started)
        trainer.add_event_handler(Events.GET_BATCH_STARTED, lambda e: mark.__setitem__("get", time.perf_counter()))
        trainer.add_event_handler(Events.GET_BATCH_COMPLETED, lambda e: add("data_wait", "get"))
        first(Events.ITERATION_STARTED, lambda e: mark.__setitem__("iteration", time.perf_counter()))

        def model_completed(engine: Any) -> None:
            mark["decollate"] = time.perf_counter()
            add("model", "iteration")

        first(IterationEvents.MODEL_COMPLETED, model_completed)
        trainer.add_event_handler(IterationEvents.MODEL_COMPLETED, lambda e: add("handlers", "decollate"))

        def iteration_done(engine: Any) -> None:
            mark["completed"] = time.perf_counter()
            add("process", "iteration")

        first(Events.ITERATION_COMPLETED, iteration_done)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)

    def _iteration_completed(self, engine: Any) -> None:
        self._acc["handlers"] += time.perf_counter() - self._marks["completed"]
        self.peak_rss = max(self.peak_rss, _rss_mb())
        if engine.state.iteration % engine.state.epoch_length:
            return
        now = time.perf_counter()
        iterations = engine.state.epoch_length
        timed = self._timed
        record = {
            "epoch": engine.state.epoch,
            "epoch_s": now - self._marks["epoch"],
            "epoch_cpu_s": time.process_time() - self._marks["cpu"],
            "iterations": iterations,
            "data_wait_s": self._acc["data_wait"] / iterations,
            "augmentation_s": (timed.timer.total() if timed else 0.0) / iterations,
            "handlers_s": self._acc["handlers"] / iterations,
            "process_s": self._acc["process"] / iterations,
        }
        # forward, backward and step as they ran in the epoch (CPU: the prepare_batch time taken out; on a GPU
        # they are only queued by then): the same time window as epoch_s, whatever the load did meanwhile
        record["step_s"] = self._acc["model"] - record["augmentation_s"] * iterations
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) - self._marks.get("vram0", 0)
            record["peak_vram_mb"] = peak / 2**20
        self.epochs.append(record)
        engine.interrupt()  # paused here: the other mode's epoch runs next

    def run_epoch(self) -> dict[str, Any]:
        """Run (or resume) the trainer until its next epoch's last iteration; measure compute on that epoch."""
        self._marks["resume"] = time.perf_counter()
        self.trainer.run()
        record = self.epochs[-1]
        record["compute_s"], record["compute_cpu_s"] = self.compute(record["iterations"])
        return record

    def finish(self) -> None:
        """Let the trainer end its last epoch (validation, checkpoint) and its run."""
        started = time.perf_counter()
        self.trainer.run()
        self.epochs[-1]["epoch_end_s"] = time.perf_counter() - started
        self.workflow.finalize()

    def compute(self, iterations: int) -> tuple[float, float]:
        """Seconds (wall, process CPU) of forward, backward and step for ``iterations`` iterations on this epoch's
        prepared batches."""
        t = self.trainer
        batches = self._timed.kept if self._timed else []
        if not batches:
            return float("nan"), float("nan")
        net, opt = t.network, t.optimizer
        saved = (copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict()), torch.get_rng_state())
        scaler = getattr(t, "scaler", None)
        scaler_state = copy.deepcopy(scaler.state_dict()) if scaler is not None else None
        cuda_rng = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None
        net.train()
        _sync(self.device)
        t0, cpu0 = time.perf_counter(), time.process_time()
        for x, y in batches:
            opt.zero_grad(set_to_none=t.optim_set_to_none)
            with torch.autocast(self.device.type, **t.amp_kwargs) if t.amp else contextlib.nullcontext():
                loss = t.loss_function(t.inferer(x, net), y).mean()
            if t.amp and scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
        _sync(self.device)
        per_iteration = (time.perf_counter() - t0) / len(batches)
        cpu_per_iteration = (time.process_time() - cpu0) / len(batches)
        net.load_state_dict(saved[0])
        opt.load_state_dict(saved[1])
        torch.set_rng_state(saved[2])
        if scaler is not None and scaler_state is not None:
            scaler.load_state_dict(scaler_state)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        opt.zero_grad(set_to_none=True)
        return per_iteration * iterations, cpu_per_iteration * iterations


def _median(values: Sequence[float]) -> float:
    values = [v for v in values if v is not None and v == v]
    return float(statistics.median(values)) if values else float("nan")


def _summary(run: _Run, warmup: int) -> dict[str, Any]:
    measured = run.epochs[warmup:] or run.epochs
    keys = ("epoch_s", "compute_s", "epoch_cpu_s", "compute_cpu_s")
    keys += ("step_s", "data_wait_s", "augmentation_s", "handlers_s", "process_s", "epoch_end_s")
    out: dict[str, Any] = {k: _median([e.get(k) for e in measured]) for k in keys}
    iterations = measured[0]["iterations"]
    out["iterations"] = iterations
    out["overhead_s"] = (out["epoch_s"] - out["compute_s"]) / iterations
    out["epoch_over_compute"] = out["epoch_s"] / out["compute_s"]
    # the same in CPU seconds of this process (all its threads): what the epoch did, whatever else ran
    out["cpu_epoch_over_compute"] = out["epoch_cpu_s"] / out["compute_cpu_s"]
    # each measured epoch against the compute pass right after it, and against its own steps (the same window)
    out["epoch_over_compute_per_epoch"] = [e["epoch_s"] / e["compute_s"] for e in measured]
    out["epoch_over_step"] = _median([e["epoch_s"] / e["step_s"] for e in measured])
    out["peak_ram_mb"] = run.peak_rss
    out["peak_vram_mb"] = max((e.get("peak_vram_mb", 0.0) for e in run.epochs), default=0.0)
    out["epochs"] = run.epochs
    return out


# ---- the benchmark -----------------------------------------------------------------------------------------------


def _modes(augmentation: str | Sequence[str]) -> list[str]:
    if isinstance(augmentation, str):
        augmentation = MODES if augmentation in ("both", "all") else augmentation.split(",")
    modes = [str(m).strip() for m in augmentation if str(m).strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"--augmentation takes sample, batch or both, got {augmentation!r}.")
    return modes


def benchmark_pipeline(
    bundle: str,
    augmentation: str = "both",
    device: str | None = None,
    json: str | None = None,
    epochs: int = 3,
    warmup: int = 1,
    threads: int | None = None,
    amp: bool | None = None,
    batches: int = 8,
    cases: int = 6,
    dataset_dir: str | None = None,
    datalist: str | None = None,
    work_dir: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    **more_overrides: Any,
) -> dict[str, Any]:
    """Seconds per epoch against pure compute, data wait, augmentation and overhead per iteration, peak RAM/VRAM,
    for each augmentation mode of a bundle, side by side in this process (see the module docstring).

    Args:
        bundle: a bundle of ``bundles/`` (e.g. ``hippocampus_mri_unet``).
        augmentation: ``sample``, ``batch`` or ``both`` (side by side, epochs in turns).
        device: ``cpu`` or ``cuda`` (default: the bundle's, CUDA when there is one).
        json: also write the result to this JSON file.
        epochs: measured epochs per mode (after ``warmup``).
        warmup: epochs run first and not counted (one-off costs: kernel selection, allocator growth).
        threads: torch intra-op threads (default: torch's).
        amp: mixed precision (default: the bundle's, on with CUDA).
        batches: prepared batches kept per epoch for the compute measurement.
        cases: synthetic cases written for bundles without real data here.
        dataset_dir: the dataset folder (default: real hippocampus data, else synthetic data).
        datalist: the datalist (with ``dataset_dir``).
        work_dir: where the synthetic data and the run folders go (default: a temporary folder, removed).
        overrides: more bundle overrides (e.g. ``{'batch_size': 2}``).
        **more_overrides: bundle overrides as flags too (e.g. ``--batch_size 2``).
    """
    from monai.bundle import ConfigWorkflow

    from shared_components.bundle.runner import output_overrides
    from shared_components.bundle.scaffold import BUNDLES_DIR

    modes = _modes(augmentation)
    if threads:
        torch.set_num_threads(int(threads))
    bundle_dir = BUNDLES_DIR / bundle
    if not (bundle_dir / "configs" / "train.yaml").is_file():
        raise FileNotFoundError(f"no bundle {bundle!r} in {BUNDLES_DIR}")
    tmp = None if work_dir else tempfile.TemporaryDirectory(prefix="pipeline_benchmark_")
    root = Path(work_dir or tmp.name)  # type: ignore[union-attr]
    root.mkdir(parents=True, exist_ok=True)
    try:
        data = _data(bundle, root, cases, dataset_dir, datalist)
        common: dict[str, Any] = {
            **data,
            "max_epochs": warmup + epochs,
            "val_interval": 10**6,
            "check_data": "off",
            # the final epoch's validation (always run once) on one case
            "validate#dataset#data": "$shared_components.data.split(@datalist, @fold, 'val', @dataset_dir)[:1]",
        }
        if device:
            common["device"] = f"$torch.device({device!r})"
        if amp is not None:
            common["amp"] = bool(amp)
        common |= dict(overrides or {}) | more_overrides
        runs: dict[str, _Run] = {}
        old = os.getcwd()
        os.chdir(bundle_dir)
        try:
            for mode in modes:
                ov = common | output_overrides(root / f"run_{mode}") | {"augmentation_args#mode": mode}
                workflow = ConfigWorkflow(config_file="configs/train.yaml", workflow_type="train", **ov)
                workflow.initialize()
                runs[mode] = _Run(mode, workflow, batches)
            for r in range(warmup + epochs):
                for mode in modes if r % 2 == 0 else modes[::-1]:
                    record = runs[mode].run_epoch()
                    logger.info(
                        f"{mode} epoch {record['epoch']}: {record['epoch_s']:.2f}s, compute {record['compute_s']:.2f}s"
                    )
            for run in runs.values():
                run.finish()
        finally:
            os.chdir(old)
        first = next(iter(runs.values()))
        parser = first.workflow.parser
        result: dict[str, Any] = {
            "bundle": bundle,
            "device": str(first.device),
            "threads": torch.get_num_threads(),
            "amp": bool(first.trainer.amp),
            "epochs": epochs,
            "warmup": warmup,
            "batch_size": parser.get_parsed_content("batch_size"),
            "patch_size": list(parser.get_parsed_content("patch_size")),
            "augmentation": parser.get_parsed_content("augmentation_args").get("augmentation", "default"),
            "data": data.get("dataset_dir") or "bundle default",
            "modes": {m: _summary(run, warmup) for m, run in runs.items()},
        }
        if set(MODES) <= set(runs):
            s, b = result["modes"]["sample"], result["modes"]["batch"]
            keys = ("epoch_s", "compute_s", "epoch_cpu_s", "compute_cpu_s")
            result["batch_over_sample"] = {k: b[k] / s[k] for k in keys if s[k]}
        if json:
            Path(json).parent.mkdir(parents=True, exist_ok=True)
            Path(json).write_text(jsonlib.dumps(result, indent=2) + "\n")
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()


def format_result(result: Mapping[str, Any]) -> str:
    """A table of :func:`benchmark_pipeline`'s result, one row per mode."""
    head = (
        f"{result['bundle']} on {result['device']} ({result['threads']} threads, amp {result['amp']}), batch "
        f"{result['batch_size']} of {result['patch_size']}, augmentation {result['augmentation']}, medians of "
        f"{result['epochs']} epochs after {result['warmup']}"
    )
    rows = [
        head,
        "mode    epoch_s  compute_s  epoch/compute  (CPU s: epoch/compute)  epoch/step  per iteration: data_wait  "
        "augmentation  handlers  overhead  peak RAM MB  peak VRAM MB",
    ]
    for mode, m in result["modes"].items():
        rows.append(
            f"{mode:<7} {m['epoch_s']:7.2f}  {m['compute_s']:9.2f}  {m['epoch_over_compute']:13.3f}  "
            f"{m['cpu_epoch_over_compute']:22.3f}  {m['epoch_over_step']:10.3f}  "
            f"{m['data_wait_s']:25.4f}  {m['augmentation_s']:12.4f}  {m['handlers_s']:8.4f}  {m['overhead_s']:8.4f}  "
            f"{m['peak_ram_mb']:11.0f}  {m['peak_vram_mb']:12.0f}"
        )
    ratio = result.get("batch_over_sample")
    if ratio:
        rows.append("batch/sample: " + ", ".join(f"{k} {v:.3f}" for k, v in ratio.items()))
    return "\n".join(rows)
