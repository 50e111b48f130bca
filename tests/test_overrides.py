"""Loss, optimizer and scheduler presets switch with one override each, on any bundle, without editing files:
each preset runs through a real bundle workflow (the hippocampus UNet bundle on two real cases) and does what its
name says."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from monai import losses
from torch.optim import lr_scheduler

from shared_components.bundle.runner import TRAIN, run_bundle
from shared_components.bundle.scaffold import BUNDLES_DIR
from shared_components.training import LOSSES, OPTIMIZERS, SCHEDULERS
from tests.helpers import HIPPO, SmokeData, hippocampus_smoke_data, run_workflow, smoke_overrides

BUNDLE = BUNDLES_DIR / HIPPO
LOSS_CLASSES = {
    "dice": losses.DiceLoss,
    "dice_ce": losses.DiceCELoss,
    "dice_focal": losses.DiceFocalLoss,
    "focal": losses.FocalLoss,
    "tversky": losses.TverskyLoss,
    "generalized_dice": losses.GeneralizedDiceLoss,
}
OPTIMIZER_CLASSES = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}
LR = 0.01
# learning rate after two epochs of max_epochs=2, from each schedule's formula
FINAL_LR = {
    "constant": LR,
    "step": LR * 0.1 * 0.1,  # x0.1 every max(2 // 3, 1) = 1 epoch
    "cyclic": LR / 10,  # lr/10 -> lr -> lr/10 (half-cycle of max(2 // 10, 1) = 1 epoch)
    "cosine": 0.0,  # no warm-up (2 // 20 = 0 epochs), cosine from lr to 0 over 2 epochs
    "poly": 0.0,  # LR * (1 - 2/2) ** 0.9
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def hippo(tmp_path_factory: pytest.TempPathFactory, hippo_dir: Path) -> SmokeData:
    """Two real hippocampus cases: one trains (one iteration per epoch at batch 1), one validates."""
    return hippocampus_smoke_data(tmp_path_factory.mktemp("hippo"), hippo_dir)


def _train(data: SmokeData, out: Path, epochs: int = 1, **overrides) -> object:
    ov = smoke_overrides("unet", data, out)
    ov |= {"max_epochs": epochs, "val_interval": 1 if epochs > 1 else 10, "learning_rate": LR}
    ov |= {"scheduler_name": "constant", **overrides}
    return run_workflow(BUNDLE, ["configs/train.yaml"], "train", ov)


@pytest.mark.parametrize("name", LOSSES)
def test_loss_preset(name: str, hippo, tmp_path: Path):
    w = _train(hippo, tmp_path, loss_name=name)
    loss = w.parser.get_parsed_content("loss")
    assert isinstance(loss.loss, LOSS_CLASSES[name])
    trainer = w.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 1
    out = trainer.state.output
    assert math.isfinite(float((out[0] if isinstance(out, list) else out)["loss"]))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_preset(name: str, hippo, tmp_path: Path):
    w = _train(hippo, tmp_path, optimizer_name=name)
    optimizer = w.parser.get_parsed_content("optimizer")
    assert type(optimizer) is OPTIMIZER_CLASSES[name]
    assert optimizer.param_groups[0]["lr"] == LR
    if name == "sgd":  # nnU-Net's SGD
        assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == 0.99
    state = [s for s in optimizer.state.values() if s]
    assert state, "the optimizer took no step"
    assert w.parser.get_parsed_content("train#trainer").state.iteration == 1


@pytest.mark.parametrize("name", SCHEDULERS)
def test_scheduler_preset(name: str, hippo, tmp_path: Path):
    w = _train(hippo, tmp_path, epochs=2, scheduler_name=name)
    scheduler = w.parser.get_parsed_content("lr_scheduler")
    lr = w.parser.get_parsed_content("optimizer").param_groups[0]["lr"]
    with open(tmp_path / "logs" / "history.csv") as f:
        history = list(csv.DictReader(f))
    assert len(history) == 2
    if name == "plateau":  # stepped after each validation with its key metric, not once per epoch
        assert isinstance(scheduler, lr_scheduler.ReduceLROnPlateau)
        dice = [float(r["val_mean_dice"]) for r in history]
        assert scheduler.last_epoch == 2 and scheduler.best == pytest.approx(max(dice))
        assert lr == LR  # patience 2: no reduction after two validations
    else:
        assert lr == pytest.approx(FINAL_LR[name], abs=1e-9)


def test_loss_arguments_reach_the_loss(hippo, tmp_path: Path):
    w = _train(hippo, tmp_path, loss_name="focal", loss_args={"gamma": 3.0})
    assert w.parser.get_parsed_content("loss").loss.gamma == 3.0


def test_unknown_preset_names_the_choices(hippo, tmp_path: Path):
    with pytest.raises(RuntimeError) as info:  # MONAI wraps the preset's ValueError in its config error
        _train(hippo, tmp_path, optimizer_name="lion")
    messages, error = [], info.value
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    assert any("Unknown optimizer 'lion'; choose one of: adam, adamw, sgd, rmsprop" in m for m in messages), messages


@pytest.mark.slow
def test_documented_cli_override(hippo, tmp_path: Path):
    """The README's one-line override through the stock CLI in a subprocess."""
    ov = smoke_overrides("unet", hippo, tmp_path)
    ov |= {"loss_name": "focal", "optimizer_name": "sgd", "learning_rate": 0.01, "scheduler_name": "poly"}
    ov |= {"max_epochs": 2, "val_interval": 1}
    run_bundle(BUNDLE, TRAIN, ov, log_file=tmp_path / "train.log")
    log = (tmp_path / "train.log").read_text()
    assert "--loss_name focal --optimizer_name sgd --learning_rate 0.01 --scheduler_name poly" in log
    with open(tmp_path / "logs" / "history.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    assert lrs == pytest.approx([0.01 * 0.5**0.9, 0.0])  # history logs the LR after each epoch's poly step
    assert (tmp_path / "models" / "model.pt").is_file()
