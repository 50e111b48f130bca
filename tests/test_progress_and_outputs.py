"""What a user sees of a bundle run: a progress bar with the loss while training (``--progress false``: none, and
none in the runner's log files), a closing line naming where evaluation and inference wrote (inference to
``predictions/`` by default, not evaluation's ``eval/``), no warning the user can do nothing about, and the
leaderboard's inference cost end to end next to the network's forward time."""

from __future__ import annotations

import json
import os
import re
import subprocess
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from shared_components.bundle import runner
from shared_components.bundle.runner import EVALUATE, INFER, TRAIN, bundle_command, run_bundle
from shared_components.bundle.scaffold import BUNDLES_DIR
from shared_components.experiments.benchmark import run_path
from shared_components.experiments.leaderboard import _markdown
from shared_components.experiments.runs import INFER_LOG, engine_seconds, timed_inference
from shared_components.workflow import ProgressBar, is_on, quiet_warnings, report_evaluation, report_predictions
from tests.helpers import HIPPO, smoke_overrides, tiny_overrides

BUNDLE = BUNDLES_DIR / HIPPO
# warnings that a bundle run printed and its user could do nothing about (fixed at their cause or filtered exactly)
NOISE = ("No hash value provided", "Detected deprecated name", "`torch.cuda.amp.GradScaler(args...)` is deprecated")
# MONAI's security notice of `monai.bundle run` (before any config code runs; deliberately kept)
SECURITY_NOTICE = re.compile(r"^parsing config_file .*Only proceed if this config is from a source you trust")


def _cli(configs: tuple[str, ...], overrides: dict, log: Path) -> tuple[int, str, str]:
    """The stock CLI from the bundle folder: (exit status, stdout, stderr), carriage returns kept (no tqdm switch
    inherited from the environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    cmd = bundle_command(configs, overrides)
    done = subprocess.run(cmd, cwd=BUNDLE, capture_output=True, env=env, timeout=900)
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    log.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{out}\n--- stderr\n{err}")
    assert done.returncode == 0, err[-3000:]
    return done.returncode, out, err


def _bar_lines(stderr: str) -> list[str]:
    return [part for line in stderr.split("\n") for part in line.split("\r") if "%|" in part]


def _unexpected(stderr: str) -> list[str]:
    """stderr lines that are neither progress bar redraws nor MONAI's security notice."""
    lines = [line for line in stderr.split("\n") if "\r" not in line and "%|" not in line]
    return [line for line in lines if line.strip() and not SECURITY_NOTICE.match(line)]


def _assert_quiet(stderr: str) -> None:
    noisy = [n for n in NOISE if n in stderr]
    assert not noisy, f"noisy warnings printed: {noisy}"
    assert not _unexpected(stderr), f"unexpected stderr: {_unexpected(stderr)[:10]}"


# ---- one tiny training, then evaluation and inference of it, through the stock CLI ----------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smoke_data):
    """A 1-epoch tiny UNet run on two real hippocampus cases (progress bar on, the default): its overrides, output
    folder and stderr."""
    hippo = smoke_data("hippocampus_mri")
    out = tmp_path_factory.mktemp("progress")
    overrides = smoke_overrides("unet", hippo, out)
    _, _, err = _cli(TRAIN, overrides, out / "train.log")
    assert (out / "models" / "model.pt").is_file()
    return hippo, overrides, out, err


@pytest.mark.slow
def test_training_shows_a_progress_bar_with_the_loss_and_no_warnings(trained):
    _, _, _, err = trained
    bars = _bar_lines(err)
    assert any(re.search(r"loss=\d+\.\d{4}", b) and re.search(r"\[\d+/\d+\]", b) for b in bars), err[-2000:]
    assert "\r" in err  # tqdm redraws in place
    _assert_quiet(err)


@pytest.mark.slow
def test_progress_false_shows_no_bar(smoke_data, tmp_path):
    hippo = smoke_data("hippocampus_mri")
    overrides = {**smoke_overrides("unet", hippo, tmp_path), "progress": "false"}  # as typed: the string 'false'
    _, _, err = _cli(TRAIN, overrides, tmp_path / "train.log")
    assert not _bar_lines(err) and "loss=" not in err and "\r" not in err, err[-2000:]
    _assert_quiet(err)


@pytest.mark.slow
def test_evaluation_ends_with_its_tables(trained):
    _, overrides, out, _ = trained
    _, stdout, err = _cli(EVALUATE, {**overrides, "progress": False}, out / "evaluate.log")
    last = stdout.strip().splitlines()[-1]
    assert last.startswith(f"evaluation tables: {out / 'eval' / 'metrics_summary.csv'} (also "), last
    assert "metrics_per_case.csv" in last
    _assert_quiet(err)


@pytest.mark.slow
def test_inference_writes_to_predictions_by_default_and_says_so(trained, tmp_path):
    hippo, _, out, _ = trained
    root = tmp_path / "bundle_root"  # a copy of what inference reads from the bundle folder: models/model.pt
    (root / "models").mkdir(parents=True)
    (root / "models" / "model.pt").write_bytes((out / "models" / "model.pt").read_bytes())
    overrides = {"bundle_root": str(root), "input_data": hippo.infer_input, "num_workers": 0, **tiny_overrides("unet")}
    _, stdout, err = _cli(INFER, overrides, tmp_path / "infer.log")
    name = Path(hippo.infer_input).name.replace(".nii.gz", "_seg.nii.gz")
    assert (root / "predictions" / name).is_file() and not (root / "eval").exists()
    assert stdout.strip().splitlines()[-1] == f"predictions: {root / 'predictions'} (1 files)"
    assert _bar_lines(err), "inference shows its progress bar by default"
    _assert_quiet(err)


@pytest.mark.slow
def test_timed_inference_through_the_runner_leaves_a_clean_log(trained):
    """The benchmark's timing of the stock inference command: per volume and start-up, and a log file without
    progress bars (the runner turns tqdm off for log files)."""
    hippo, overrides, out, _ = trained
    timing = timed_inference(BUNDLE, out, 0, overrides, cases=3)
    assert timing["cli_inference_cases"] == 1  # the fold has one validation case
    assert 0 < timing["cli_seconds_per_volume"] < timing["cli_inference_seconds"]
    assert 0 < timing["cli_startup_seconds"] < timing["cli_inference_seconds"]
    log = (out / INFER_LOG).read_bytes().decode()
    assert "\r" not in log and "%|" not in log
    assert f"predictions: {out / 'predictions'} (1 files)" in log


# ---- the pieces, without running a bundle -----------------------------------------------------------------------


def test_runner_turns_progress_bars_off_for_log_files_only(monkeypatch, tmp_path):
    seen = []

    def fake_run(cmd, cwd=None, env=None, **kwargs):
        seen.append(env)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    run_bundle(tmp_path, INFER, {}, log_file=tmp_path / "a.log")
    run_bundle(tmp_path, INFER, {})
    run_bundle(tmp_path, INFER, {}, log_file=tmp_path / "b.log", env={"TQDM_DISABLE": "0"})
    assert [e.get("TQDM_DISABLE") for e in seen] == ["1", None, "0"]


def test_progress_bar_shows_the_loss_of_monai_outputs():
    bar = ProgressBar()
    assert type(bar).__name__ == "ProgressBar"  # multi_gpu_*.yaml's rank0_handlers go by this name
    assert bar.shown([{"loss": torch.tensor(0.51234), "pred": torch.zeros(2)}]) == {"loss": "0.5123"}
    assert bar.shown({"loss": 2.0}) == {"loss": "2.0000"}
    assert bar.shown([{"pred": torch.zeros(2)}]) == bar.shown(None) == {}
    assert [is_on(v) for v in (True, "true", "True", 1, False, "false", "False", "0", "no")] == [True] * 4 + [False] * 5


def test_closing_lines_name_the_outputs(tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    for name in ("a_seg.nii.gz", "b_seg.nii.gz", "notes.txt"):
        (pred / name).write_text("x")
    assert report_predictions(str(pred)) == f"predictions: {pred} (2 files)"
    ev = tmp_path / "eval"
    assert report_evaluation(str(ev)).startswith("evaluation tables: none written")
    (ev / "predictions").mkdir(parents=True)
    for name in ("metrics_summary.csv", "metrics_per_case.csv", "metrics_summary.json"):
        (ev / name).write_text("x")
    (ev / "predictions" / "c_seg.nii.gz").write_text("x")
    line = report_evaluation(str(ev), "true")
    assert line == (
        f"evaluation tables: {ev / 'metrics_summary.csv'} (also metrics_per_case.csv, metrics_summary.json)\n"
        f"predictions: {ev / 'predictions'} (1 files)"
    )
    assert report_evaluation(str(ev), "false").count("\n") == 0
    assert capsys.readouterr().out.splitlines()[-1] == line.splitlines()[0]


def test_quiet_warnings_filter_exactly_the_listed_ones():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_warnings()
        torch.cuda.amp.GradScaler(enabled=False)  # what MONAI's trainer builds with amp=True
        warnings.warn("`torch.cuda.amp.autocast(args...)` is deprecated.", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["`torch.cuda.amp.autocast(args...)` is deprecated."]


def test_engine_seconds_from_an_ignite_log():
    log = "a - Engine run finished. Time taken: 00:00:02.500\nb - Engine run finished. Time taken: 01:02:03.250\n"
    assert engine_seconds(log) == 3723.25 and engine_seconds("nothing") is None


def _settings(bundle_dirs: list[str]) -> dict:
    return {
        "name": "ds",
        "bundles": ["ds_unet", "ds_segresnet"],
        "bundle_dirs": bundle_dirs,
        "folds": [0],
        "datalist": "/x/list.json",
        "seed": 0,
        "max_epochs": 2,
        "machine": {"cpu_cores": 2, "torch_threads": 2, "gpu": None},
        "command": "python scripts/benchmark.py run",
        "finished": "today",
    }


def _row(model: str, **extra) -> dict:
    row = {"model": model, "bundle": f"ds_{model}", "status": "done", "failed": "", "cases": 3, "rank": 1.0}
    row |= {"dice_mean": 0.88, "parameters": 1187766, "seconds_per_epoch": 6.8, "epochs": 2.0, "train_minutes": 1.0}
    return row | {"inference_seconds_per_volume": 0.042, **extra}


def test_leaderboard_shows_end_to_end_inference_and_names_each_run(tmp_path):
    shipped = tmp_path / "ds_unet"
    (shipped / "models").mkdir(parents=True)
    (shipped / "models" / "model.pt").write_bytes(b"")
    (shipped / "configs").mkdir()
    (shipped / "configs" / "metadata.json").write_text(json.dumps({"eval_metrics": {"mean_dice": 0.8755}}))
    settings = _settings([str(shipped), str(tmp_path / "ds_segresnet")])
    for folder in (tmp_path / "ds_segresnet" / "models", run_path(tmp_path, "ds_segresnet", 0) / "models"):
        folder.mkdir(parents=True)
        (folder / "model.pt").write_bytes(b"this run's best weights")  # the bundle ships the benchmark run's weights
    timed = _row("unet", cli_seconds_per_volume=0.061, cli_startup_seconds=5.5, peak_ram_gb=1.15)
    md = _markdown(settings, pd.DataFrame([timed, _row("segresnet", peak_ram_gb=1.4)]), {}, tmp_path)
    assert "| forward s / volume | stock CLI s / volume | stock CLI start-up s | peak RAM GB |" in md
    assert "| unet | 1.19 | 6.8 | 2 | 1.0 | 0.042 | 0.061 | 5.5 | 1.15 |" in md
    assert "| segresnet | 1.19 | 6.8 | 2 | 1.0 | 0.042 | not measured | not measured | 1.40 |" in md
    assert "| `runs/ds_unet/fold_0` |" in md and "| `runs/ds_segresnet/fold_0` |" in md
    assert "`ds_unet` ships `models/model.pt` from a different run (mean Dice 0.8755," in md
    assert "`ds_segresnet` ships" not in md and "byte for byte, by `ds_segresnet`: these runs' weights" in md


def test_leaderboard_says_when_end_to_end_inference_was_not_measured(tmp_path):
    md = _markdown(_settings([]), pd.DataFrame([_row("unet", peak_ram_gb=1.15)]), {}, tmp_path)
    assert "stock CLI s / volume" not in md and "| unet | 1.19 | 6.8 | 2 | 1.0 | 0.042 | 1.15 |" in md
    assert "start-up once per command): not measured in these runs" in md
