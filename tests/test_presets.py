"""The preset registry: every loss, optimizer, scheduler and augmentation preset builds, says what it is and has
a default search range; the README's table is the registry's rendering; unknown names list the known ones."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from shared_components.bundle import model_card
from shared_components.training import (
    LOSSES,
    OPTIMIZERS,
    SCHEDULERS,
    build_loss,
    build_optimizer,
    build_scheduler,
    registry,
)
from shared_components.transforms import chains

README = Path(__file__).resolve().parents[1] / "README.md"
ALL = [(kind, name) for kind in registry.PROVIDERS for name in registry.names(kind)]


def _loss_value(name: str, multilabel: bool, deep: bool = False, **kwargs) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(2, *((2,) if deep else ()), 3, 8, 8, 8, requires_grad=True)
    y = (torch.rand(2, 3, 8, 8, 8) > 0.5).float() if multilabel else torch.randint(0, 3, (2, 1, 8, 8, 8))
    value = build_loss(name, multilabel, **kwargs)(x, y)
    value.backward()
    assert math.isfinite(value.item()) and x.grad is not None
    return value


def _optimizer(name: str = "adamw", **kwargs) -> torch.optim.Optimizer:
    return build_optimizer(name, [torch.nn.Parameter(torch.ones(3))], **{"lr": 0.01, **kwargs})


def _build(kind: str, name: str, **kwargs) -> None:
    """Build preset ``name`` and use it once (a loss on softmax, sigmoid and deep-supervision outputs)."""
    if kind == "loss":
        for multilabel in (False, True):
            _loss_value(name, multilabel, **kwargs)
        _loss_value(name, False, deep=True, **kwargs)
    elif kind == "optimizer":
        opt = _optimizer(name, **kwargs)
        (opt.param_groups[0]["params"][0] ** 2).sum().backward()
        opt.step()
        assert opt.param_groups[0]["params"][0].tolist() != [1.0, 1.0, 1.0]
    elif kind == "scheduler":
        for opt_name in OPTIMIZERS:
            opt = _optimizer(opt_name)
            scheduler = build_scheduler(name, opt, 10, **kwargs)
            for _ in range(3):
                opt.step()
                scheduler.step(0.5) if name == "plateau" else scheduler.step()
            assert 0.0 <= opt.param_groups[0]["lr"] <= 0.01 + 1e-12
    else:
        rng = np.random.default_rng(0)
        data = {"image": torch.tensor(rng.random((1, 12, 12, 12)), dtype=torch.float32)}
        data["label"] = torch.tensor(rng.integers(0, 3, (1, 12, 12, 12)), dtype=torch.float32)
        out = Compose(chains.augmentations(name, (0, 1, 2), **kwargs)).set_random_state(seed=0)(data)
        assert out["image"].shape == out["label"].shape == (1, 12, 12, 12)


@pytest.mark.parametrize(("kind", "name"), ALL)
def test_every_preset_builds(kind: str, name: str):
    _build(kind, name)


@pytest.mark.parametrize(("kind", "name"), ALL)
def test_every_preset_has_a_description_and_a_search_range(kind: str, name: str):
    preset = registry.get(kind, name)
    assert (preset.kind, preset.name) == (kind, name)
    assert preset.description.strip() and "\n" not in preset.description
    assert isinstance(preset.search, dict)  # declared for every preset; {} when only the name is worth searching
    prefix = {"loss": "loss_args#", "augmentation": "augmentation_args#"}.get(kind)
    for key, spec in preset.search.items():
        assert key.startswith(prefix) if prefix else key in ("learning_rate", "weight_decay"), key
        assert set(spec) == {"choices"} or {"low", "high"} <= set(spec) <= {"low", "high", "log", "step"}, spec
    if kind == "optimizer":  # the future search's learning-rate default
        assert {"learning_rate", "weight_decay"} <= set(preset.search)


@pytest.mark.parametrize(("kind", "name"), [(k, n) for k, n in ALL if registry.get(k, n).search])
def test_search_ranges_reach_the_builder(kind: str, name: str):
    """Every bound (or choice) of a default range builds: the keys are arguments the preset takes."""
    for key, spec in registry.get(kind, name).search.items():
        for value in spec.get("choices", [spec.get("low"), spec.get("high")]):
            if kind == "loss":
                arg = key.split("#", 1)[1]
                assert getattr(build_loss(name, **{arg: value}).loss, arg, value) == value
                _loss_value(name, False, **{arg: value})
            else:  # optimizer: learning_rate, weight_decay
                arg = {"learning_rate": "lr"}.get(key, key)
                assert _optimizer(name, **{arg: value}).param_groups[0][arg] == value


def test_names_are_derived_from_the_registry():
    assert LOSSES == registry.names("loss") == ("dice", "dice_ce", "dice_focal", "focal", "tversky", "generalized_dice")
    assert OPTIMIZERS == registry.names("optimizer") == ("adam", "adamw", "sgd", "rmsprop")
    assert SCHEDULERS == registry.names("scheduler") == ("constant", "step", "plateau", "cyclic", "cosine", "poly")
    assert chains.AUGMENTATIONS == registry.names("augmentation") == ("none", "light", "default", "strong", "nnunet")
    assert set(registry.PROVIDERS) == set(registry.CONFIG_KEYS)


def test_names_are_case_insensitive():
    assert type(_optimizer("AdamW")) is torch.optim.AdamW
    assert type(build_loss("Dice-CE").loss).__name__ == "DiceCELoss"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: build_loss("lovasz"), "Unknown loss 'lovasz'; choose one of: dice, dice_ce, dice_focal, focal, "),
        (lambda: _optimizer("lion"), "Unknown optimizer 'lion'; choose one of: adam, adamw, sgd, rmsprop."),
        (lambda: build_scheduler("onecycle", _optimizer(), 10), "Unknown scheduler 'onecycle'; choose one of: "),
        (lambda: chains.augmentations("extreme"), "Unknown augmentation 'extreme'; choose one of: none, light, "),
        (lambda: registry.names("metric"), "Unknown preset kind 'metric'; choose one of: loss, optimizer, "),
    ],
)
def test_unknown_name_lists_the_known_ones(build, message: str):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


def test_register_checks_its_entry():
    with pytest.raises(ValueError, match="already registered"):
        registry.register("loss", "dice", description="again", search={})
    with pytest.raises(ValueError, match="low < high"):
        registry.register(
            "optimizer", "bad", description="x", search={"learning_rate": {"low": 0.0, "high": 1, "log": True}}
        )
    with pytest.raises(ValueError, match="needs a description"):
        registry.register("scheduler", "bad", description=" ", search={})
    assert "bad" not in registry.names("optimizer") + registry.names("scheduler")


def test_readme_table_is_the_registry_rendering():
    """The README's preset table is :func:`registry.markdown_table` (regenerate it from there when presets change)."""
    lines = README.read_text().splitlines()
    header = registry.markdown_table().splitlines()[0]
    start = lines.index(header)
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    assert "\n".join(lines[start:end]) + "\n" == registry.markdown_table()


def test_model_cards_take_the_registry_descriptions():
    card = model_card.ModelCard.__new__(model_card.ModelCard)  # no bundle needed for the text of a preset
    card.config = {"loss_name": "dice_ce", "multilabel": False}
    assert card.loss_text() == registry.get("loss", "dice_ce").description
    card.config["multilabel"] = True
    assert card.loss_text() == "Dice + binary cross-entropy (batch Dice), on each sigmoid region channel"
    strong = model_card.describe_augmentation({"augmentation": "strong", "flip_axes": [1, 2]})
    sample = "; applied to each patch in the data loader's workers (`augmentation_args#mode` `sample`)"
    assert strong == "mirroring along axes 1, 2" + registry.get("augmentation", "strong").description[9:] + sample
    assert model_card.describe_augmentation({"augmentation": "none"}) == "none" + sample
    batch = model_card.describe_augmentation({"augmentation": "custom", "mode": "batch"})
    assert (
        batch
        == "see augmentation_args; applied to the collated batch on the training device (`augmentation_args#mode` `batch`)"
    )


def _fresh(code: str, cwd: Path) -> None:
    """Run ``code`` in a new interpreter; its stderr is the failure message."""
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "code",
    [
        "import shared_components.transforms.chains as c; assert c.AUGMENTATIONS",
        "from shared_components.training import registry as r; assert r.names('augmentation') and r.names('loss')",
    ],
    ids=["transforms_first", "registry_first"],
)
def test_imports_have_no_cycle(code: str):
    """Fresh interpreters importing the registry's users in each order (transforms register into training's
    registry; training imports transforms only on the first augmentation look-up)."""
    _fresh(code, README.parent)


def test_vendored_copies_use_their_own_registry(tmp_path: Path):
    """A bundle's vendored code (package ``scripts``, no ``shared_components``) looks its presets up in its own
    copy of the registry; a copy without the transforms has no augmentation presets rather than an import error."""
    from shared_components.shipping import vendor

    vendor.vendor({"training.build_loss", "transforms.train_transforms"}, tmp_path, package="full")
    vendor.vendor({"training.build_loss"}, tmp_path, package="part")
    code = (
        "import sys\n"
        "from full.training import build_loss, registry\n"
        "from full.transforms import chains\n"
        "from part.training import registry as part\n"
        "assert type(build_loss('tversky').loss).__name__ == 'TverskyLoss'\n"
        "assert type(chains.augmentations('strong')[-1]).__name__ == 'RandAdjustContrastd'\n"
        "assert part.names('augmentation') == () and part.names('loss') == registry.names('loss')\n"
        "assert not [m for m in sys.modules if m.startswith('shared_components')]\n"
    )
    _fresh(code, tmp_path)
