"""A bundle command line is checked before anything runs: unknown overrides are refused with the closest valid ids,
``--help`` lists the bundle's overrides, ``run training``/``run evaluating`` work next to the default ``run``, and a
failed run ends with a short summary of its root cause (the real CLI on the hippocampus bundle and real cases)."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
import types
from pathlib import Path
from pprint import pformat

import pytest

from shared_components.bundle.layout import MARKER
from shared_components.bundle.runner import EVALUATE, INFER, TRAIN, bundle_command
from shared_components.bundle.scaffold import BUNDLES_DIR
from shared_components.data.errors import DataValidationError, Problem
from shared_components.workflow import invocation
from shared_components.workflow.invocation import (
    RUN_ARGS,
    WORKFLOW_ARGS,
    check_invocation,
    cli_args,
    describe_overrides,
    load_config,
    parse_run_args,
    summary,
    unknown_overrides,
)
from tests.helpers import HIPPO, SmokeData, smoke_overrides, tiny_overrides

BUNDLE = BUNDLES_DIR / HIPPO
ALLOWED = [*RUN_ARGS, *WORKFLOW_ARGS]


def _cli(run_id: str | None, configs: tuple[str, ...], overrides: dict, log: Path) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run [run_id] --config_file ... --key value ...`` from the bundle folder."""
    cmd = bundle_command(configs, overrides)
    if run_id:
        cmd.insert(4, run_id)
    done = subprocess.run(cmd, cwd=BUNDLE, capture_output=True, text=True, timeout=900)
    log.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    return done


# ---- the command line, without running anything ------------------------------------------------------------------


def test_words_are_read_as_fire_reads_them():
    words = ["training", "--config_file", "['configs/train.yaml','configs/evaluate.yaml']", "--max-epochs", "3"]
    words += ["--fold=2", "--amp", "--nochannels_last", "--sw_overlap", "-0.5", "-h"]
    assert parse_run_args(words) == {
        "run_id": "training",
        "config_file": ["configs/train.yaml", "configs/evaluate.yaml"],
        "max_epochs": 3,
        "fold": 2,
        "amp": True,
        "channels_last": False,
        "sw_overlap": -0.5,
        "h": True,
    }
    assert parse_run_args(["--config_file", "configs/train.yaml", "x", "y"])["init_id"] == "y"


def test_only_the_monai_bundle_cli_is_checked(monkeypatch):
    assert cli_args() is None  # pytest: a bundle run from Python (as MONAI Label's server runs it)
    hook = sys.excepthook
    assert check_invocation() is None
    assert sys.excepthook is hook
    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name="monai.bundle.__main__")
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", ["/x/monai/bundle/__main__.py", "run", "--config_file", "c.yaml"])
    assert cli_args() == ["--config_file", "c.yaml"]
    monkeypatch.setattr(sys, "argv", ["/x/monai/bundle/__main__.py", "run_workflow", "--config_file", "c.yaml"])
    assert cli_args() is None


def test_override_ids_are_checked_against_the_merged_configs(monkeypatch):
    monkeypatch.chdir(BUNDLE)
    parser = load_config(list(EVALUATE))
    valid = ["max_epochs", "network_def#channels", "network_def::strides", "train#handlers#0#print_lr"]
    valid += ["save_predictions", "loss_args#gamma", "augmentation_args#foo", "_meta_#version", "run_id"]
    assert unknown_overrides(parser, valid, ALLOWED) == []
    messages = unknown_overrides(parser, ["max_epoch", "network_def#chanels", "foo", "max_epochs#x"], ALLOWED)
    assert messages == [
        "unknown override --max_epoch: did you mean --max_epochs?",
        "unknown override --network_def#chanels: did you mean --network_def#channels?",
        "unknown override --foo: no such id in the configs (`--help` lists the bundle's overrides)",
        "unknown override --max_epochs#x: max_epochs is not a dict, so it takes no new entries",
    ]
    (listed,) = unknown_overrides(parser, ["train#handlers#99"], ALLOWED)
    assert "train#handlers is a list of" in listed
    (tracking,) = unknown_overrides(parser, ["tracking_uri"], ALLOWED)
    assert "add --tracking mlflow" in tracking


def test_a_command_line_is_refused_or_passed(monkeypatch, capsys):
    monkeypatch.chdir(BUNDLE)
    ok = ["training", "--config_file", "configs/train.yaml", "--network_def#channels", "[8,16,32]", "--fold", "1"]
    ok += ["--tracking", "mlflow", "--tracking_uri", "sqlite:///x.db", "--experiment_name", "e", "--workflow_type", "t"]
    assert check_invocation(ok) is None
    with pytest.raises(SystemExit) as refused:
        check_invocation(["--config_file", "['configs/train.yaml','configs/evaluate.yaml']", "--save_prediction", "1"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "error: unknown override --save_prediction: did you mean --save_predictions?" in err


def test_help_lists_each_override_with_its_value_and_meaning(monkeypatch, capsys):
    monkeypatch.chdir(BUNDLE)
    text = describe_overrides(list(TRAIN))
    rows = {line.split()[0]: line for line in text.splitlines() if line.strip().startswith("--")}
    assert rows["--max_epochs"].split()[1] == "150"
    assert rows["--network_def#channels"].split(None, 1)[1] == "[16, 32, 64, 128]"
    assert "# normalised surface Dice tolerance" in rows["--nsd_tolerance_mm"]
    assert "--check_data" in rows and "--network" not in rows and "--train" not in rows
    assert "configs/train.yaml (header): data" in text and "Run ids here: run, training" in text
    assert "--save_predictions" in describe_overrides(list(EVALUATE))
    assert "--input_data" in describe_overrides(list(INFER))
    with pytest.raises(SystemExit) as done:
        check_invocation(["--config_file", "configs/train.yaml", "--max_epoch", "3", "--help"])
    assert done.value.code == 0 and "--max_epochs" in capsys.readouterr().out


def test_the_marker_is_the_layouts():
    assert invocation.MARKER == MARKER


def _wrapped(error: Exception, expression: str) -> RuntimeError:
    """``error`` as MONAI raises it from a config expression."""
    try:
        try:
            raise error
        except Exception as e:
            raise RuntimeError(f"Failed to evaluate ConfigExpression: \n{pformat(expression)}") from e
    except RuntimeError as wrapper:
        return wrapper


def test_summary_names_the_root_cause_last(tmp_path):
    missing = tmp_path / "no_such_dataset"
    problems = [Problem(f"case{i}", str(missing / f"{i}.nii.gz"), "image file is missing", "fix") for i in range(7)]
    expression = "$shared_components.data.check_datalist(__local_refs['train::dataset::data'])"  # as MONAI shows it
    error = _wrapped(DataValidationError(problems, "datalist"), expression)
    lines = summary(error).splitlines()
    assert lines[2] == "run failed while evaluating: $shared_components.data.check_datalist(@train#dataset#data)"
    assert lines[4] == "DataValidationError: 7 problem(s) in datalist:"
    assert lines[-2] == "  ... and 2 more (all listed in the traceback above)"
    assert lines[-1] == f"  the folder {missing} does not exist: check --dataset_dir / --datalist"
    lines = summary(_wrapped(ValueError("Unknown optimizer 'lion'"), "$f(@x)")).splitlines()
    assert lines[-1] == "ValueError: Unknown optimizer 'lion'"


# ---- exit statuses and the real CLI ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("raise_", "status"), [("KeyboardInterrupt", None), ("SystemExit(3)", 3), ("ValueError('bad value')", 1)]
)
def test_exit_statuses_are_kept(raise_: str, status: int | None):
    hook = "from shared_components.workflow.invocation import install_excepthook\ninstall_excepthook()\n"
    plain = subprocess.run([sys.executable, "-c", f"raise {raise_}"], capture_output=True, text=True, timeout=300)
    hooked = subprocess.run(
        [sys.executable, "-c", f"{hook}raise {raise_}"], capture_output=True, text=True, timeout=300
    )
    assert hooked.returncode == plain.returncode
    assert status is None or hooked.returncode == status
    if status == 1:
        assert hooked.stderr.startswith("Traceback") and hooked.stderr.splitlines()[-1] == "ValueError: bad value"


@pytest.fixture(scope="module")
def hippo(smoke_data) -> SmokeData:
    return smoke_data("hippocampus_mri")


@pytest.mark.slow
def test_typo_is_refused_before_anything_runs(hippo, tmp_path):
    overrides = {**smoke_overrides("unet", hippo, tmp_path), "max_epoch": 3}
    t0 = time.perf_counter()
    done = _cli(None, TRAIN, overrides, tmp_path / "run.log")
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-2] == "error: unknown override --max_epoch: did you mean --max_epochs?"
    assert time.perf_counter() - t0 < 120 and "Epoch" not in done.stdout + done.stderr
    assert not (tmp_path / "models").exists() and not (tmp_path / "logs").exists()


@pytest.mark.slow
def test_help_lists_the_overrides_and_exits(hippo, tmp_path):
    done = _cli(None, TRAIN, {**smoke_overrides("unet", hippo, tmp_path), "help": True}, tmp_path / "run.log")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.strip().startswith("--max_epochs ")]
    assert rows == [["--max_epochs", "150"]]
    assert not (tmp_path / "models").exists()


@pytest.fixture(scope="module")
def trained(hippo, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``run training``: one epoch of the tiny network (nested overrides) on one real case, validated on another."""
    out = tmp_path_factory.mktemp("trained")
    return out, _cli("training", TRAIN, smoke_overrides("unet", hippo, out), out / "train.log")


@pytest.mark.slow
def test_run_training_trains(trained):
    out, done = trained
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "models" / "model.pt").is_file()
    with open(out / "logs" / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1]


@pytest.mark.slow
def test_run_evaluating_train_and_evaluate(trained, hippo):
    out, _ = trained
    done = _cli("evaluating", EVALUATE, smoke_overrides("unet", hippo, out), out / "evaluate.log")
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / "eval" / "metrics_per_case.csv") as f:
        assert {r["case"] for r in csv.DictReader(f)} == {"hippocampus_001"}  # the fold-0 case


@pytest.mark.slow
def test_run_evaluating_inference(trained, hippo):
    out, _ = trained
    overrides = {"dataset_dir": str(hippo.dataset_dir), "input_data": [hippo.infer_input], **tiny_overrides("unet")}
    overrides |= {"ckpt_path": str(out / "models" / "model.pt"), "output_dir": str(out / "pred"), "num_workers": 0}
    done = _cli("evaluating", INFER, overrides, out / "infer.log")
    assert done.returncode == 0, done.stderr[-3000:]
    name = Path(hippo.infer_input).name.replace(".nii.gz", "_seg.nii.gz")
    assert (out / "pred" / name).is_file()


@pytest.mark.slow
def test_bad_dataset_dir_ends_with_a_short_summary(hippo, tmp_path):
    missing = tmp_path / "no_such_dataset"
    overrides = {**smoke_overrides("unet", hippo, tmp_path), "dataset_dir": str(missing)}
    done = _cli("training", TRAIN, overrides, tmp_path / "run.log")
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr  # the full traceback comes first
    last = done.stderr.strip().splitlines()
    start = max(i for i, line in enumerate(last) if line.startswith("run failed while evaluating: "))
    tail = last[start:]
    assert len(tail) <= 12 and "check_datalist" in tail[0]
    assert tail[2].startswith("DataValidationError: 1 problem(s) in datalist")  # one for the 4 files of 2 cases
    assert tail[-1].startswith(f"  1. [2 case(s)] {missing}: the folder does not exist (4 file(s) of 2 case(s)")
    assert tail[-1].endswith("-> check --dataset_dir (the folder the datalist's paths are relative to) and --datalist")
