"""Fail fast: bad input stops a training run with a non-zero exit and a message naming the file, never a saved model
and exit 0.

Each bad input is made in a copy of 4 real hippocampus cases (3 train, 1 validates) in ``tmp_path`` and trained on
through the stock ``python -m monai.bundle run`` CLI (``slow``), with a tiny UNet and every output, the caches
included, in ``tmp_path``. What the data check at ``initialize`` can see stops the run before the trainer exists
(no run folder); what only training shows (a NaN loss, an empty epoch, a failed loader thread) stops it before
anything of the epoch is kept. The guards themselves, the verdict cache and the run folder's interplay with a NaN
run are also tested in-process (fast).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor, ThreadDataLoader

from shared_components.bundle.runner import TRAIN, bundle_command, output_overrides
from shared_components.data import checks
from shared_components.data.checks import check_datalist
from shared_components.data.converters.msd import msd_datalist
from shared_components.data.datasets import CaseLoadError, VerifiedPersistentDataset
from shared_components.data.errors import DataValidationError
from shared_components.training.checkpoint import BEST, BEST_JSON, STATE, STATE_JSON, RunCheckpoint, load_state
from shared_components.training.guards import FailFast, TrainingAborted, batch_files
from tests.helpers import HIPPO, tiny_overrides

ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
BAD = 1  # the case made bad: it trains (fold 1)


# ---- the data and the runs --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, hippo_dir: Path) -> Path:
    """4 real cases copied with a datalist of relative paths: case 0 validates (fold 0), cases 1-3 train."""
    root = tmp_path_factory.mktemp("clean")
    cases = msd_datalist(hippo_dir, folds=5, seed=0)["training"][:4]
    entries = []
    for i, e in enumerate(cases):
        entry = {"subject": Path(e["image"]).name.replace(".nii.gz", ""), "fold": 0 if i == 0 else 1 + i % 2}
        for key in ("image", "label"):
            rel = f"{key}sTr/{Path(e[key]).name}"
            (root / rel).parent.mkdir(exist_ok=True)
            shutil.copyfile(hippo_dir / e[key], root / rel)
            entry[key] = rel
        entries.append(entry)
    (root / "datalist.json").write_text(json.dumps({"labels": {"0": "bg", "1": "a", "2": "p"}, "training": entries}))
    return root


def _dataset(clean: Path, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    data = tmp_path / "data"
    shutil.copytree(clean, data)
    return data, json.loads((data / "datalist.json").read_text())["training"][BAD]


def _edit(path: Path, change: Any) -> None:
    img = nib.load(path)
    nib.save(nib.Nifti1Image(change(np.asanyarray(img.dataobj)), img.affine, img.header), path)


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _train(data: Path, tmp_path: Path, bundles_dir: Path, **extra: Any) -> subprocess.CompletedProcess:
    ov = {"dataset_dir": str(data), "datalist": str(data / "datalist.json"), "max_epochs": 2, "val_interval": 1}
    ov |= {"batch_size": 1, "num_workers": 0, "tensorboard": False, "cache_dir": str(tmp_path / "cache")}
    ov |= output_overrides(tmp_path / "run") | tiny_overrides("unet") | extra
    env = {**os.environ, **ENV}
    cmd = bundle_command(TRAIN, ov)
    return subprocess.run(cmd, cwd=bundles_dir / HIPPO, env=env, capture_output=True, text=True, timeout=900)


def _output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def _stopped(proc: subprocess.CompletedProcess, tmp_path: Path, *named: str, before_training: bool = True) -> str:
    """A run that stopped with exit 1 (not an abort), naming ``named`` in its last lines, with nothing kept."""
    out = _output(proc)
    assert proc.returncode == 1, out[-4000:]
    assert "terminate called" not in out
    tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
    for text in named:
        assert text in tail, tail
    run = tmp_path / "run"
    for kept in (STATE, STATE_JSON, BEST, "models/model.pt"):
        assert not (run / kept).exists(), f"{kept} was written"
    if before_training:
        assert not (run / "config.json").exists(), "training started"
        assert "Epoch[1]" not in out
    return tail


# ---- what the data check at initialize stops (the default check_data full) ----------------------------------------


@pytest.mark.slow
def test_nan_voxel_stops_before_training(clean, tmp_path, bundles_dir):
    data, case = _dataset(clean, tmp_path)
    image = data / case["image"]

    def nan(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float32)
        a[5, 5, 5] = np.nan
        return a

    _edit(image, nan)
    tail = _stopped(_train(data, tmp_path, bundles_dir), tmp_path, str(image))
    assert "image has 1 NaN/Inf voxels" in tail


@pytest.mark.slow
def test_label_value_outside_the_classes_stops_before_training(clean, tmp_path, bundles_dir):
    data, case = _dataset(clean, tmp_path)
    label = data / case["label"]
    _edit(label, lambda a: np.where(a == 2, 7, a).astype(a.dtype))
    tail = _stopped(_train(data, tmp_path, bundles_dir), tmp_path, str(label))
    assert "label values [7] are outside the declared classes [0, 1, 2] (num_classes=3)" in tail


@pytest.mark.slow
def test_empty_label_stops_before_training_unless_allowed(clean, tmp_path, bundles_dir):
    data, case = _dataset(clean, tmp_path)
    label = data / case["label"]
    _edit(label, np.zeros_like)
    tail = _stopped(_train(data, tmp_path, bundles_dir), tmp_path, str(label))
    assert "label is empty" in tail and "--allow_empty_labels true" in tail
    allowed = _train(data, tmp_path, bundles_dir, allow_empty_labels=True, max_epochs=1)
    assert allowed.returncode == 0, _output(allowed)[-4000:]
    assert (tmp_path / "run" / "models" / "model.pt").is_file()


@pytest.mark.slow
def test_truncated_file_stops_before_training(clean, tmp_path, bundles_dir):
    data, case = _dataset(clean, tmp_path)
    image = data / case["image"]
    _truncate(image)
    tail = _stopped(_train(data, tmp_path, bundles_dir, cache="disk"), tmp_path, str(image))
    assert "voxel data cannot be read" in tail


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["negative fold", "no training cases"])
def test_a_fold_without_training_or_validation_cases_stops_before_training(bad, clean, tmp_path, bundles_dir):
    data, _ = _dataset(clean, tmp_path)
    if bad == "negative fold":
        proc = _train(data, tmp_path, bundles_dir, fold=-1)
        expected = "--fold -1 is not a fold of the datalist (folds 0-2)"
    else:
        datalist = json.loads((data / "datalist.json").read_text())
        for e in datalist["training"]:
            e["fold"] = 0
        (data / "datalist.json").write_text(json.dumps(datalist))
        proc = _train(data, tmp_path, bundles_dir)
        expected = "no cases to train on: every case is in fold 0"
    tail = _stopped(proc, tmp_path, expected)
    assert "[fold " in tail


@pytest.mark.slow
def test_a_wrong_dataset_dir_is_one_message(clean, tmp_path, bundles_dir):
    missing = tmp_path / "no_such_folder"
    proc = _train(missing, tmp_path, bundles_dir, datalist=str(clean / "datalist.json"))
    tail = _stopped(proc, tmp_path, str(missing), "the folder does not exist", "--dataset_dir")
    assert "file is missing" not in _output(proc)
    assert "DataValidationError: 1 problem(s)" in tail


# ---- what training stops -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_naming_the_case(clean, tmp_path, bundles_dir):
    """A finite image so bright that z-score normalisation overflows float32: the data check passes it, the loss
    of its batch is NaN."""
    data, case = _dataset(clean, tmp_path)
    image = data / case["image"]
    _edit(image, lambda a: (a.astype(np.float32) / a.max() * 3e38).astype(np.float32))
    proc = _train(data, tmp_path, bundles_dir)
    tail = _stopped(proc, tmp_path, "TrainingAborted: the loss is nan", str(image), before_training=False)
    assert "epoch 1" in tail


@pytest.mark.slow
def test_an_epoch_without_iterations_stops_before_training(clean, tmp_path, bundles_dir):
    data, _ = _dataset(clean, tmp_path)
    proc = _train(data, tmp_path, bundles_dir, batch_size=8, **{"train#dataloader#drop_last": True})
    tail = _stopped(proc, tmp_path, "TrainingAborted: the training data loader yields no batch")
    assert "3 training case(s), batch size 8, drop_last" in tail


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["none", "disk", "memory"])
def test_a_case_that_fails_to_load_stops_the_run(cache, clean, tmp_path, bundles_dir):
    """Without the data check: a truncated file fails in MONAI's loader thread (none, disk: the guard stops the
    epoch, naming the file) or while the memory cache fills (every failed case listed), never exit 0 or 134."""
    data, case = _dataset(clean, tmp_path)
    image = data / case["image"]
    _truncate(image)
    proc = _train(data, tmp_path, bundles_dir, check_data="off", cache=cache, num_workers=2)
    if cache == "memory":
        tail = _stopped(proc, tmp_path, "DataValidationError", str(image), "loading failed: EOFError")
    else:
        tail = _stopped(proc, tmp_path, "TrainingAborted: data loading failed", str(image), before_training=False)
        assert "EOFError" in tail and "Epoch[1] Complete" not in _output(proc)


@pytest.mark.slow
def test_a_truncated_disk_cache_entry_is_rebuilt(clean, tmp_path, bundles_dir):
    data, _ = _dataset(clean, tmp_path)
    first = _train(data, tmp_path, bundles_dir, cache="disk", max_epochs=1)
    assert first.returncode == 0, _output(first)[-4000:]
    assert "8 file(s) read, 0 remembered" in first.stdout + first.stderr
    entries = sorted((tmp_path / "cache" / "train").glob("*.pt"))
    assert len(entries) == 3 and not list((tmp_path / "cache" / "train").glob(".*"))  # no temporaries left
    good = entries[0].read_bytes()
    _truncate(entries[0], 0.3)  # what a kill during a non-atomic write leaves
    again = _train(data, tmp_path, bundles_dir, cache="disk", max_epochs=1, overwrite=True)
    out = _output(again)
    assert again.returncode == 0, out[-4000:]
    assert f"disk cache entry {entries[0]} is unreadable" in out and "rebuilding it" in out
    assert "Traceback" not in out and "Exception in thread" not in out
    assert len(entries[0].read_bytes()) == len(good) and torch.load(entries[0], weights_only=True)
    assert "0 file(s) read, 8 remembered" in out  # the data check's verdicts were remembered
    assert load_state(tmp_path / "run" / STATE)["iteration"] == 3  # every case trained on


# ---- in-process: the verdict cache, the disk cache, the guards ------------------------------------------------------


def test_the_verdict_cache_makes_a_rerun_read_nothing(clean, tmp_path, monkeypatch):
    data, case = _dataset(clean, tmp_path)
    reads: list[str] = []
    for name in ("read_header", "read_array"):
        real = getattr(checks, name)
        monkeypatch.setattr(checks, name, lambda f, _real=real: reads.append(f) or _real(f))
    cache = tmp_path / "cache" / "check_cache.json"

    def check(**kw: Any) -> int:
        reads.clear()
        return check_datalist(data / "datalist.json", str(data), 1, 3, level="full", cache_file=cache, **kw)

    assert check() == 4 and len(reads) == 16  # header and voxels of 8 files
    assert check() == 4 and reads == []
    stored = json.loads(cache.read_text())["files"]
    assert set(stored) == {
        str(data / e[k])
        for e in json.loads((data / "datalist.json").read_text())["training"]
        for k in ("image", "label")
    }
    label = data / case["label"]
    _edit(label, np.zeros_like)  # a changed file is read again, and judged with the current options
    with pytest.raises(DataValidationError, match="label is empty"):
        check()
    assert sorted(set(reads)) == [str(label)]
    assert check(allow_empty=True) == 4 and reads == []  # other options: the remembered facts suffice


def test_a_corrupt_disk_cache_entry_is_rebuilt(tmp_path, caplog):
    def prepare(item: dict) -> dict:
        return {"image": torch.full((2, 2), float(item["v"])), "label": torch.zeros(2, 2)}

    from monai.transforms import Compose, Lambdad

    transform = Compose([Lambdad(("image", "label"), lambda x: x)])
    ds = VerifiedPersistentDataset([{"image": "a", "label": "b", "v": 1}], transform, cache_dir=tmp_path)
    ds._pre_transform = lambda item: prepare(item)  # deterministic part: what the entry holds
    assert torch.equal(ds[0]["image"], torch.ones(2, 2))
    (entry,) = tmp_path.glob("*.pt")
    torch.save([1, 2, 3], entry)  # loads, but is not this item's entry
    with caplog.at_level("WARNING"):
        assert torch.equal(ds[0]["image"], torch.ones(2, 2))
    assert "rebuilding it" in caplog.text
    assert isinstance(torch.load(entry, weights_only=True), dict)


class _Cases(torch.utils.data.Dataset):
    """Images with filename metadata; item ``bad`` fails to load, naming its case."""

    def __init__(self, n: int, bad: int | None = None):
        self.n, self.bad = n, bad

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if i == self.bad:
            raise CaseLoadError(f"case c{i} could not be loaded: /data/c{i}.nii.gz: EOFError", f"c{i}", [f"c{i}"])
        return {"image": MetaTensor(torch.ones(1, 2), meta={"filename_or_obj": f"/data/c{i}.nii.gz"})}


def test_batch_files_reads_collated_and_decollated_batches():
    batch = next(iter(ThreadDataLoader(_Cases(3), batch_size=2)))
    assert batch_files(batch) == ["/data/c0.nii.gz", "/data/c1.nii.gz"]
    assert batch_files([_Cases(3)[2], {"image": torch.ones(1)}]) == ["/data/c2.nii.gz"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_failed_loader_thread_stops_the_epoch_naming_the_case():
    engine = Engine(lambda e, b: {"loss": torch.tensor(1.0)})
    FailFast().attach(engine)
    with pytest.raises(TrainingAborted, match=r"data loading failed \(epoch 1, training.*case c2 could not be"):
        engine.run(ThreadDataLoader(_Cases(4, bad=2), batch_size=1), max_epochs=2)
    assert engine.state.epoch == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_empty_data_and_short_validations_are_refused():
    trainer = Engine(lambda e, b: {"loss": 1.0})
    trainer.data_loader = ThreadDataLoader(_Cases(3), batch_size=8, drop_last=True)
    with pytest.raises(TrainingAborted, match="yields no batch"):
        FailFast().attach(trainer)
    validator = Engine(lambda e, b: None)
    validator.data_loader = ThreadDataLoader(_Cases(0), batch_size=1)
    trainer.data_loader = ThreadDataLoader(_Cases(3), batch_size=1)
    with pytest.raises(TrainingAborted, match="no validation cases"):
        FailFast(validator).attach(trainer)
    # a validation whose loader thread dies after one case
    validator.data_loader = ThreadDataLoader(_Cases(3, bad=1), batch_size=1)
    FailFast(validator).attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: validator.run(validator.data_loader))
    with pytest.raises(TrainingAborted, match="epoch 1, validation"):
        trainer.run(trainer.data_loader, max_epochs=1)


def test_a_nan_run_keeps_the_last_good_state_and_weights(tmp_path):
    """Epoch 1 trains and validates; epoch 2's loss turns NaN: the run stops there, its state stays epoch 1's (marked
    failed), and neither best_model.pt nor the promoted models/model.pt hold NaN weights."""
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def step(engine: Engine, batch: Any) -> dict:
        opt.zero_grad()
        loss = net(torch.ones(1, 2)).sum() ** 2
        if engine.state.epoch == 2:
            loss = loss * float("nan")
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), "image": batch}

    validator = Engine(lambda e, b: None)

    @validator.on(Events.STARTED)
    def _metric(v: Engine) -> None:
        v.state.key_metric_name, v.state.best_metric, v.state.best_metric_epoch = "dice", -1, -1
        v.state.metrics = {"dice": 0.5}

    trainer = Engine(step)
    run, models = tmp_path / "run", tmp_path / "run" / "models"
    FailFast(validator).attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: validator.run([0]))
    RunCheckpoint(str(run), str(models), net, opt, validator=validator, signature={"seed": 0}).attach(trainer)
    with pytest.raises(TrainingAborted, match="the loss is nan at epoch 2"):
        trainer.run([0, 1], max_epochs=3)
    saved = json.loads((run / STATE_JSON).read_text())
    assert saved["status"] == "failed" and saved["epoch"] == 1 and "TrainingAborted" in saved["reason"]
    assert json.loads((run / BEST_JSON).read_text())["epoch"] == 1
    for weights in (run / BEST, models / "model.pt"):
        assert all(torch.isfinite(v).all() for v in torch.load(weights, weights_only=True).values())
    assert all(torch.isfinite(v).all() for v in load_state(run / STATE)["network"].values())
    assert not all(torch.isfinite(p).all() for p in net.parameters())  # the NaN step did happen, in memory only
