"""Ablations one factor at a time: the variants of a bundle, the grid of variants x seeds (each run once, rerun
resumes), the statistics of the table against the defaults, and (slow) a tiny real ablation on 6 hippocampus
cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from scipy import stats

from shared_components.data.converters.msd import msd_datalist
from shared_components.evaluation.statistics import holm
from shared_components.experiments import ablation
from shared_components.experiments.runs import resolve_bundle
from shared_components.training import registry
from tests.helpers import HIPPO, tiny_overrides


def test_variants_one_factor_at_a_time():
    hippo = resolve_bundle(HIPPO)
    v = ablation.variants(hippo, ablation.DEFAULT_FACTORS, fixed={"max_epochs": 60})
    assert list(v)[0] == "default" and v["default"]["overrides"] == {}
    losses = [k for k in v if v[k]["factor"] == "loss_name"]
    assert len(losses) == len(registry.names("loss")) - 1 and "loss_name=dice_ce" not in v  # dice_ce: the default
    assert v["loss_name=focal"]["overrides"] == {"loss_name": "focal", "loss_args": {}}
    assert "optimizer_name=adamw" not in v and v["optimizer_name=sgd"]["overrides"] == {"optimizer_name": "sgd"}
    assert len([k for k in v if v[k]["factor"] == "scheduler_name"]) == len(registry.names("scheduler")) - 1
    # batch size and epochs scale together from the bundle's batch 2 and the study's 60 epochs
    assert v["batch_size_x_epochs=batch 1 x 30 epochs"]["overrides"] == {"batch_size": 1, "max_epochs": 30}
    assert v["batch_size_x_epochs=batch 4 x 120 epochs"]["overrides"] == {"batch_size": 4, "max_epochs": 120}
    assert len(v) == 1 + 5 + 3 + 5 + 2
    # aliases, numeric factors, given levels, composite levels
    w = ablation.variants(hippo, "loss,learning_rate", {"loss": ["dice", "dice_ce"]})
    assert list(w) == ["default", "loss_name=dice", "learning_rate=0.002", "learning_rate=0.008"]  # x0.5, x2 of 0.004
    c = ablation.variants(hippo, ["lr_wd"], {"lr_wd": [{"learning_rate": 0.01, "weight_decay": 0.001}]})
    assert c["lr_wd=learning_rate=0.01,weight_decay=0.001"]["overrides"] == {
        "learning_rate": 0.01,
        "weight_decay": 0.001,
    }
    with pytest.raises(ValueError, match="did you mean --learning_rate"):
        ablation.variants(hippo, "learnig_rate")
    with pytest.raises(ValueError, match="Unknown loss"):
        ablation.variants(hippo, "loss_name", {"loss_name": ["nope"]})
    with pytest.raises(ValueError, match="no level other than"):
        ablation.variants(hippo, "loss_name", {"loss_name": ["dice_ce"]})


def test_table_statistics_against_the_defaults():
    rng = np.random.default_rng(0)
    cases = [f"c{i}" for i in range(12)]
    base = {c: 0.8 + 0.01 * i for i, c in enumerate(cases)}
    per_case = {
        "default": {s: {c: {"a": base[c] + 0.01 * s, "b": base[c]} for c in cases} for s in (0, 1)},
        "x=worse": {
            s: {c: {"a": base[c] - 0.05 + rng.normal(0, 0.01), "b": base[c] - 0.05} for c in cases} for s in (0, 1)
        },
        "y=same": {s: {c: {"a": base[c] + rng.normal(0, 0.01), "b": base[c]} for c in cases} for s in (0, 1)},
    }
    values = {
        v: {s: float(np.mean([np.mean(list(d.values())) for d in per_case[v][s].values()])) for s in (0, 1)}
        for v in per_case
    }
    specs = {v: {"factor": v.split("=")[0], "level": v.split("=")[-1], "overrides": {}} for v in per_case}
    table = ablation.ablation_table(specs, per_case, values).set_index("variant")

    def seed_mean(v: str) -> np.ndarray:
        return np.array([np.mean([np.mean(list(per_case[v][s][c].values())) for s in (0, 1)]) for c in cases])

    ref = seed_mean("default")
    p = [stats.wilcoxon(seed_mean(v), ref).pvalue for v in ("x=worse", "y=same")]
    assert table.loc["x=worse", "p_wilcoxon"] == pytest.approx(p[0]) and table.loc[
        "y=same", "p_wilcoxon"
    ] == pytest.approx(p[1])
    assert list(table.loc[["x=worse", "y=same"], "p_holm"]) == pytest.approx(holm(p))
    assert table.loc["x=worse", "diff"] == pytest.approx(np.mean(seed_mean("x=worse") - ref))
    assert table.loc["x=worse", "diff_ci_high"] < 0 < table.loc["y=same", "diff_ci_high"]
    assert table.loc["default", "dice"] == pytest.approx(ref.mean()) and pd.isna(table.loc["default", "p_wilcoxon"])
    assert table.loc["default", "seeds"] == 2 and table.loc["default", "seed_sd"] == pytest.approx(
        np.std(list(values["default"].values()), ddof=1)
    )


def fake_objective(trial: Any, overrides: dict[str, Any], run_dir: Path) -> float:
    """Test objective: per-case Dice that depend on the variant's loss and the seed."""
    shift = {"dice": -0.05, "focal": -0.1}.get(overrides.get("loss_name"), 0.0) + 0.001 * overrides["seed"]
    cases = {f"c{i}": {"anterior": 0.8 + 0.01 * i + shift, "posterior": 0.82 + shift} for i in range(8)}
    trial.set_user_attr("case_dice", cases)
    return float(np.mean([np.mean(list(c.values())) for c in cases.values()]))


def test_grid_runs_each_variant_and_seed_once_and_resumes(tmp_path):
    kwargs = {
        "bundle": HIPPO,
        "factors": "loss_name,scheduler_name",
        "levels": {"loss_name": ["dice", "focal"], "scheduler_name": ["constant"]},
        "seeds": "0,1,2",
        "out": str(tmp_path / "runs"),
        "report_out": str(tmp_path / "results"),
        "mlflow": False,
        "objective": f"{__name__}:fake_objective",
        "max_epochs": 10,
    }
    md = ablation.ablate(**kwargs)
    st = optuna.load_study(study_name=f"ablation_{HIPPO}", storage=f"sqlite:///{tmp_path / 'runs' / 'ablation.db'}")
    done = sorted((t.params["variant"], t.params["seed"]) for t in st.trials if t.state.name == "COMPLETE")
    variants = ["default", "loss_name=dice", "loss_name=focal", "scheduler_name=constant"]
    assert done == sorted((v, s) for v in variants for s in (0, 1, 2)) and len(st.trials) == 12
    focal = [t for t in st.trials if t.params["variant"] == "loss_name=focal" and t.params["seed"] == 2][0]
    assert focal.user_attrs["overrides"] == {"loss_name": "focal", "loss_args": {}, "seed": 2}
    table = pd.read_csv(tmp_path / "results" / "ablations.csv").set_index("variant")
    assert list(table.index) == variants and set(table["seeds"]) == {3}
    assert table.loc["loss_name=focal", "diff"] == pytest.approx(-0.1) and table.loc[
        "loss_name=dice", "diff"
    ] == pytest.approx(-0.05)
    text = md.read_text()
    assert "| loss_name | focal | 3 | 0.7" in text and "| default | bundle defaults | 3 |" in text
    command = (  # the report prints the command that made the grid (dict levels are not a file: left out)
        f".venv/bin/segbundles tune ablate {HIPPO} --factors loss_name,scheduler_name --seeds 0,1,2 --fold 0 "
        f"--max_epochs 10 --out {tmp_path / 'runs'} --report_out {tmp_path / 'results'}"
    )
    assert f"```bash\n{command}\n```" in text
    assert (tmp_path / "results" / "plots" / "ablation_dice.png").stat().st_size > 10_000
    per_case = pd.read_csv(tmp_path / "results" / "ablations_per_case.csv")
    assert len(per_case) == 4 * 3 * 8 * 2
    ablation.ablate(**kwargs)  # rerun: every run done, nothing runs again
    assert len(optuna.load_study(study_name=f"ablation_{HIPPO}", storage=st._storage).trials) == 12
    with pytest.raises(ValueError, match="other settings"):
        ablation.ablate(**{**kwargs, "seeds": "0,1"})


@pytest.mark.slow
def test_tiny_real_ablation(tmp_path, hippo_dir, monkeypatch, one_thread):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cases = msd_datalist(hippo_dir, folds=5, seed=0)["training"][:6]
    for i, e in enumerate(cases):
        e["fold"] = i // 2
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": cases}))
    fixed = {**tiny_overrides("unet"), "batch_size": 2, "augmentation_args#num_samples": 2, "num_workers": 0}
    fixed |= {"cache": "memory", "check_data": "quick", "tensorboard": False, "learning_rate": 0.01}
    md = ablation.ablate(
        HIPPO,
        factors="loss_name",
        levels={"loss_name": ["dice"]},
        seeds="0,1",
        max_epochs=1,
        val_interval=1,
        datalist=str(datalist),
        dataset_dir=str(hippo_dir),
        overrides=fixed,
        out=str(tmp_path / "runs"),
        report_out=str(tmp_path / "results"),
        mlflow=str(tmp_path / "mlruns"),
    )
    table = pd.read_csv(tmp_path / "results" / "ablations.csv").set_index("variant")
    assert list(table.index) == ["default", "loss_name=dice"] and set(table["seeds"]) == {2}
    assert set(table["cases"]) == {2} and table["dice"].between(0, 1).all()
    per_case = pd.read_csv(tmp_path / "results" / "ablations_per_case.csv")
    runs = {}
    for run in (tmp_path / "runs").glob("trial_*"):
        ov = json.loads((run / "run.json").read_text())["overrides"]
        runs[("default" if ov.get("loss_name", "dice_ce") == "dice_ce" else "loss_name=dice", ov["seed"])] = run
    assert len(runs) == 4
    for r in per_case.to_dict("records"):  # the table's numbers are the runs' evaluations
        ev = pd.read_csv(runs[(r["variant"], r["seed"])] / "eval" / "metrics_per_case.csv")
        v = ev[(ev["case"] == r["case"]) & (ev["class"] == r["class"]) & (ev["metric"] == "dice")]["value"]
        assert float(v.iloc[0]) == pytest.approx(r["dice"], abs=1e-5)
    text = md.read_text()
    assert "| loss_name | dice | 2 |" in text and "Holm" in text
