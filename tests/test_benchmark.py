"""A benchmark of two working bundles and a broken one on 6 real hippocampus cases (1 epoch each): the failure is
recorded and the grid goes on; the leaderboard's numbers match the per-case CSVs; statistics, plots and MLflow."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from scipy import stats

from shared_components.data.converters.msd import msd_datalist
from shared_components.evaluation.report import with_case_means
from shared_components.experiments.benchmark import dataset_name, run_benchmark, run_path
from shared_components.experiments.leaderboard import make_report
from shared_components.experiments.runs import count_parameters, resolve_bundles
from tests.helpers import HIPPO

pytestmark = pytest.mark.slow


def variant(src, dst, old: str, new: str):
    """A copy of the bundle ``src`` with ``old`` replaced by ``new`` in the header of train.yaml and inference.yaml
    (which copies it), as `new_bundle.py sync` would give."""
    shutil.copytree(src / "configs", dst / "configs")
    for name in ("train.yaml", "inference.yaml"):
        text = (dst / "configs" / name).read_text()
        assert old in text, name
        (dst / "configs" / name).write_text(text.replace(old, new))
    return dst


@pytest.fixture(scope="module")
def grid(tmp_path_factory, hippo_dir, bundles_dir):
    root = tmp_path_factory.mktemp("bench")
    cases = msd_datalist(hippo_dir, folds=5, seed=0)["training"][:6]
    for i, e in enumerate(cases):
        e["fold"] = 0 if i < 3 else 1 + i % 2
    (root / "datalist.json").write_text(json.dumps({"training": cases}, indent=4))
    src = bundles_dir / HIPPO
    small = variant(
        src, root / "hippocampus_mri_unet_small", "channels: [16, 32, 64, 128]", "channels: [8, 16, 32, 64]"
    )
    broken = variant(src, root / "hippocampus_mri_broken", "out_channels: '@num_classes'", "out_channels: 0")
    kwargs = {
        "bundles": f"{HIPPO},{small},{broken}",
        "folds": "0",
        "max_epochs": 1,
        "val_interval": 1,
        "datalist": str(root / "datalist.json"),
        "dataset_dir": str(hippo_dir),
        "overrides": {"batch_size": 2},
        "out": str(root / "results"),
        "infer_cases": 1,
    }
    return root, run_benchmark(**kwargs), kwargs


def test_runs_still_training_or_not_started_are_not_failures(grid, tmp_path):
    """A grid whose second fold is being trained by another worker (or not started): its models are partial, the
    report lists those runs as not finished, and only the broken bundle's run is a failure."""
    _, results, _ = grid
    copy = tmp_path / "hippocampus_mri"
    shutil.copytree(results, copy, ignore=shutil.ignore_patterns("*.pt", "mlruns*"))
    settings = json.loads((copy / "benchmark.json").read_text())
    (copy / "benchmark.json").write_text(json.dumps({**settings, "folds": [0, 1]}))
    running = run_path(copy, settings["bundles"][0], 1)
    running.mkdir(parents=True)
    (running / "run.json").write_text(json.dumps({"status": "running", "fold": 1}))
    make_report(copy)
    t = pd.read_csv(copy / "leaderboard.csv").set_index("model")
    assert set(t.loc[["unet", "unet_small"], "status"]) == {"partial (1/2)"}
    assert t.loc["broken", "status"] == "failed" and "fold 1" not in t.loc["broken", "failed"]
    md = (copy / "leaderboard.md").read_text()
    unfinished = md[md.index("## Runs not finished") :]
    assert "- unet: fold 1: running" in unfinished and "- unet_small: fold 1: not run" in unfinished
    failures = md[md.index("## Failed runs") : md.index("## Runs not finished")]
    assert "unet" not in failures and "broken: fold 0" in failures


def test_grid_goes_on_after_a_failure_and_the_table_matches_the_cases(grid):
    root, results, _ = grid
    assert results == root / "results" / "hippocampus_mri"
    table = pd.read_csv(results / "leaderboard.csv")
    assert list(table.columns[:2]) == ["rank", "model"]
    t = table.set_index("model")
    assert t.loc["broken", "status"] == "failed" and pd.isna(t.loc["broken", "rank"])
    assert "train" in t.loc["broken", "failed"]
    assert set(t.loc[["unet", "unet_small"], "status"]) == {"done"}
    assert sorted(t.loc[["unet", "unet_small"], "rank"]) == [1, 2]
    assert t.loc["unet", "parameters"] > 3 * t.loc["unet_small", "parameters"]
    # inference timed end to end through the stock command (--infer_cases), next to the forward time
    for model in ("unet", "unet_small"):
        assert t.loc[model, "cli_seconds_per_volume"] > 0 and t.loc[model, "cli_startup_seconds"] > 0, model
    cost = (results / "leaderboard.md").read_text().split("## Cost")[1].split("\n## ")[0]
    rows = [line for line in cost.splitlines() if line.startswith(("| unet |", "| unet_small |"))]
    assert len(rows) == 2 and not any("not measured" in line for line in rows), cost

    per_model = {}
    for model, bundle in (("unet", HIPPO), ("unet_small", "hippocampus_mri_unet_small")):
        cases = pd.read_csv(results / "runs" / bundle / "fold_0" / "eval" / "metrics_per_case.csv", dtype={"fold": str})
        full = with_case_means(cases.fillna({"centre": ""}))
        for metric in ("dice", "hd95", "nsd"):
            for cls in ("anterior", "posterior", "mean"):
                v = full[(full["metric"] == metric) & (full["class"] == cls)]["value"]
                assert len(v) == 3
                assert t.loc[model, f"{metric}_{cls}"] == pytest.approx(v.mean(), rel=1e-4), (model, metric, cls)
                assert (
                    t.loc[model, f"{metric}_{cls}_ci_low"]
                    <= v.mean() + 1e-9
                    <= t.loc[model, f"{metric}_{cls}_ci_high"] + 2e-9
                )
        d = full[(full["metric"] == "dice") & (full["class"] == "mean")]
        per_model[model] = d.set_index("case")["value"]
        run = json.loads((results / "runs" / bundle / "fold_0" / "run.json").read_text())
        assert run["epochs"] == 1 and t.loc[model, "seconds_per_epoch"] == pytest.approx(
            run["seconds_per_epoch"], rel=1e-4
        )
        assert t.loc[model, "inference_seconds_per_volume"] > 0 and t.loc[model, "peak_ram_gb"] > 0.1
    best, other = ("unet", "unet_small") if t.loc["unet", "rank"] == 1 else ("unet_small", "unet")
    p = stats.wilcoxon(per_model[other].sort_index(), per_model[best].sort_index()).pvalue
    assert t.loc[other, "p_wilcoxon"] == pytest.approx(p) and t.loc[other, "p_holm"] == pytest.approx(p)  # 1 test
    assert pd.isna(t.loc[best, "p_wilcoxon"])

    pooled = pd.read_csv(results / "metrics_per_case.csv")
    assert set(pooled["model"]) == {"unet", "unet_small"} and len(pooled) == 2 * 3 * 2 * 4

    md = (results / "leaderboard.md").read_text()
    assert "## Accuracy" in md and "## Cost" in md and "## Failed runs" in md and "broken (failed)" in md
    assert f"| {int(t.loc[best, 'rank'])} | {best} | {t.loc[best, 'dice_mean']:.3f} [" in md
    assert ".venv/bin/segbundles benchmark run --bundles hippocampus_mri_unet,hippocampus_mri_unet_small," in md
    for png in ("dice_boxplot.png", "dice_vs_cost.png", "learning_curves.png"):
        assert (results / "plots" / png).stat().st_size > 10_000, png
        assert f"plots/{png}" in md
    assert len(list((results / "plots").glob("overlay_*.png"))) == 3


def test_mlflow_has_every_run(grid):
    import mlflow

    _, results, _ = grid
    mlflow.set_tracking_uri(f"sqlite:///{results / 'runs' / 'mlruns.db'}")
    runs = mlflow.search_runs(experiment_names=["benchmark_hippocampus_mri"]).set_index("tags.mlflow.runName")
    assert set(runs.index) == {f"{b}/fold0" for b in (HIPPO, "hippocampus_mri_unet_small", "hippocampus_mri_broken")}
    assert runs.loc["hippocampus_mri_broken/fold0", "tags.status"] == "failed"
    unet = runs.loc[f"{HIPPO}/fold0"]
    assert unet["params.parameters"] == "1187766" and unet["params.override.max_epochs"] == "1"
    assert 0 <= unet["metrics.dice_mean"] <= 1 and unet["metrics.train_seconds"] > 0 and unet["metrics.epoch_loss"] > 0


def test_report_is_reproducible_and_settings_are_guarded(grid):
    _, results, kwargs = grid
    before = (results / "leaderboard.csv").read_text()
    make_report(results)
    assert (results / "leaderboard.csv").read_text() == before
    with pytest.raises(ValueError, match="other settings"):
        run_benchmark(**{**kwargs, "max_epochs": 2})
    with pytest.raises(ValueError, match="same budget"):
        run_benchmark(**{**kwargs, "max_epochs": None})


def test_bundle_selection_and_dataset_name():
    dirs = resolve_bundles(f"{HIPPO}")
    assert dataset_name(dirs) == "hippocampus_mri"
    with pytest.raises(FileNotFoundError, match="matches"):
        resolve_bundles("no_such_dataset_*")


def test_the_parameter_count_is_of_the_network_the_runs_train(bundles_dir):
    """A benchmark with ``--overrides '{"network_def#init_filters": 16}'`` reports the wider network's size."""
    bundle = bundles_dir / "hippocampus_mri_segresnet"
    own, wide = count_parameters(bundle), count_parameters(bundle, {"network_def#init_filters": 16})
    assert 3.5 * own < wide < 4.5 * own  # twice the filters: about four times the convolution weights


def test_a_finished_run_ships_in_its_bundle_with_its_own_numbers(grid, tmp_path):
    """`new-bundle ship`: a fresh (untrained) bundle gets the run's weights, and its card and metadata the numbers
    that run measured; shipped weights are replaced only with force; a run of another bundle is refused."""
    from shared_components.bundle import scaffold, weights
    from shared_components.bundle.model_card import README_UNTRAINED, UNTRAINED_NOTE

    root, _, kwargs = grid
    run = root / "results" / "hippocampus_mri" / "runs" / HIPPO / "fold_0"
    bundle = scaffold.create("hippocampus_mri", "unet", root=tmp_path)
    assert README_UNTRAINED in (bundle / "docs" / "README.md").read_text()
    written = weights.ship_run(bundle, run)
    assert (bundle / "models" / "model.pt").read_bytes() == (run / "models" / "model.pt").read_bytes()
    summary = json.loads((run / "eval" / "metrics_summary.json").read_text())["summary"]["all"]
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["eval_metrics"]["mean_dice"] == round(summary["mean"]["dice"]["mean"], 4)
    assert meta["eval_metrics"]["posterior_dice"] == round(summary["posterior"]["dice"]["mean"], 4)
    assert meta["version"] == "0.2.0" and "0.2.0" in meta["changelog"] and UNTRAINED_NOTE not in meta["description"]
    card = (bundle / "docs" / "README.md").read_text()
    assert README_UNTRAINED not in card and card.count("## Performance") == 1 and "## MONAI bundle commands" in card
    assert f"{summary['mean']['dice']['mean']:.4f} [{summary['mean']['dice']['ci_low']:.4f}" in card
    assert f"--bundles {HIPPO} --folds 0 --max_epochs 1" in card
    # the card says the run trained in bfloat16 exactly when it did (the default where this CPU has AMX)
    from shared_components.training import cpu_bf16_available

    assert (" ".join(weights.BF16_TEXT.split()) in " ".join(card.split())) == cpu_bf16_available("cpu")
    assert (bundle / "docs" / "learning_curves.png").stat().st_size > 1000 and bundle / "docs" / "README.md" in written
    with pytest.raises(FileExistsError, match="force"):
        weights.ship_run(bundle, run)
    weights.ship_run(bundle, run, force=True)
    assert json.loads((bundle / "configs" / "metadata.json").read_text())["version"] == "0.3.0"
    other = root / "results" / "hippocampus_mri" / "runs" / "hippocampus_mri_unet_small"
    with pytest.raises(ValueError, match="not of hippocampus_mri_unet"):
        weights.ship_run(bundle, other / "fold_0", force=True)
    fresh = scaffold.create("hippocampus_mri", "unet", root=tmp_path / "again")  # a card it cannot fill in
    card = fresh / "docs" / "README.md"
    card.write_text(card.read_text().replace("## Performance", "## Results"))
    with pytest.raises(ValueError, match="no '## Performance' section"):
        weights.ship_run(fresh, run)
    assert not (fresh / "models" / "model.pt").exists(), "a failed ship left weights behind"
    assert json.loads((fresh / "configs" / "metadata.json").read_text())["eval_metrics"] == {}
    wide = scaffold.create("hippocampus_mri", "unet", root=tmp_path / "wide")  # weights of another width
    infer = wide / "configs" / "inference.yaml"
    assert "channels: [16, 32, 64, 128]" in infer.read_text()
    infer.write_text(infer.read_text().replace("channels: [16, 32, 64, 128]", "channels: [32, 64, 128, 256]"))
    with pytest.raises(ValueError, match="does not fit hippocampus_mri_unet's network_def .size mismatch"):
        weights.ship_run(wide, run)
    assert not (wide / "models" / "model.pt").exists()


def test_an_ensemble_of_the_grids_runs_is_ranked_with_them(grid, tmp_path):
    """benchmark.py ensemble: the fold's member runs averaged and scored on that fold, a leaderboard row whose
    training cost is the members' together; a rerun keeps the scored fold; a member without a finished run or not
    in the grid is refused."""
    from shared_components.experiments.benchmark_ensemble import ENSEMBLES, ensemble_benchmark

    _, src, _ = grid
    results = tmp_path / "hippocampus_mri"
    shutil.copytree(src, results)
    ensemble_benchmark(results, "unet,unet_small")
    name = "hippocampus_mri_ensemble_unet+unet_small"
    t = pd.read_csv(results / "leaderboard.csv").set_index("model")
    row = t.loc["ensemble_unet+unet_small"]
    assert row["status"] == "done" and row["rank"] in (1, 2, 3) and row["cases"] == 3
    assert row["train_minutes"] == pytest.approx(
        t.loc["unet", "train_minutes"] + t.loc["unet_small", "train_minutes"], abs=1e-5
    )
    assert row["members"] == f"{HIPPO},hippocampus_mri_unet_small"
    eval_dir = results / "runs" / name / "fold_0" / "eval"
    cases = pd.read_csv(eval_dir / "metrics_per_case.csv", dtype={"fold": str})
    assert set(cases["fold"]) == {"0"} and len(cases[cases["metric"] == "dice"]) == 3 * 2
    md = (results / "leaderboard.md").read_text()
    assert "| ensemble_unet+unet_small |" in md and "`ensemble_unet+unet_small`: unet, unet_small averaged" in md
    assert json.loads((results / ENSEMBLES).read_text())[name]["members"] == [HIPPO, "hippocampus_mri_unet_small"]
    before = (eval_dir / "metrics_per_case.csv").stat().st_mtime_ns
    ensemble_benchmark(results, "unet,unet_small", report=False)
    assert (eval_dir / "metrics_per_case.csv").stat().st_mtime_ns == before
    with pytest.raises(RuntimeError, match="broken not done"):
        ensemble_benchmark(results, "unet,broken")
    with pytest.raises(ValueError, match="not bundles of this benchmark"):
        ensemble_benchmark(results, "unet,segresnet")


def test_a_shipped_ensemble_is_served_by_inference_yaml(grid, tmp_path, hippo_dir):
    """`new-bundle ship <bundle> <ensemble run>`: the first member's weights in models/model.pt, the other's in
    models/ensemble/ with its network config; the stock inference command then averages both (the label maps equal
    segbundles ensemble's of the two runs), the card gives the ensemble's own scores; shipping a single run again
    removes the member."""
    import nibabel as nib
    import numpy as np

    from shared_components.bundle import scaffold, weights
    from shared_components.bundle.runner import INFER, run_bundle
    from shared_components.experiments.benchmark_ensemble import ensemble_benchmark
    from shared_components.experiments.ensemble import ensemble

    root, src, _ = grid
    results = tmp_path / "hippocampus_mri"
    shutil.copytree(src, results)
    ensemble_benchmark(results, "unet,unet_small", report=False)
    run = results / "runs" / "hippocampus_mri_ensemble_unet+unet_small" / "fold_0"
    bundle = scaffold.create("hippocampus_mri", "unet", root=tmp_path / "bundles")
    weights.ship_run(bundle, run)
    member = bundle / "models" / "ensemble" / "hippocampus_mri_unet_small.pt"
    small_run = results / "runs" / "hippocampus_mri_unet_small" / "fold_0"
    assert member.read_bytes() == (small_run / "models" / "model.pt").read_bytes()
    config = json.loads(member.with_suffix(".json").read_text())
    assert config["network_def"]["channels"] == [8, 16, 32, 64] and config["num_classes"] == 3
    summary = json.loads((run / "eval" / "metrics_summary.json").read_text())["summary"]["all"]["mean"]["dice"]
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["eval_metrics"]["mean_dice"] == round(summary["mean"], 4) and "ensemble" in meta["description"]
    card = (bundle / "docs" / "README.md").read_text()
    assert "an ensemble of 2 benchmark runs" in card and "--members unet,unet_small" in card

    image = sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0]
    served = tmp_path / "served"
    run_bundle(bundle, INFER, {"input_data": str(image), "output_dir": str(served)}, tmp_path / "infer.log")
    assert (
        "averaged with 1 member(s)" in (tmp_path / "infer.log").read_text()
        and "hippocampus_mri_unet_small" in (tmp_path / "infer.log").read_text()
    )
    ref = ensemble(
        f"{bundle},{root / 'hippocampus_mri_unet_small'}",
        input_data=str(image),
        out=str(tmp_path / "reference"),
        checkpoints=f"{bundle / 'models' / 'model.pt'},{member}",
    )
    label = image.name.replace(".nii.gz", "_seg.nii.gz")
    a = np.asarray(nib.load(next(served.rglob(label))).dataobj)
    b = np.asarray(nib.load(next((ref / "predictions").rglob(label))).dataobj)
    assert np.array_equal(a, b) and len(np.unique(a)) > 1
    weights.ship_run(bundle, results / "runs" / HIPPO / "fold_0", force=True)
    assert not (bundle / "models" / "ensemble").exists()


def test_new_folds_join_a_grid_but_other_settings_are_refused(tmp_path):
    """Runs on a further fold join the grid (the settings list every fold run so far); a change of budget does not."""
    from shared_components.experiments.benchmark import SETTINGS, _check_settings

    old = {"datalist": "d.json", "dataset_dir": "data", "folds": [1], "seed": 0, "max_epochs": 300}
    old |= {"time_budget_minutes": 30.0, "val_interval": 10, "overrides": {"batch_size": 2}}
    (tmp_path / SETTINGS).write_text(json.dumps(old | {"bundles": ["a"], "bundle_dirs": ["/b/a"]}))
    requested = [0, 2]
    new = old | {"folds": requested, "bundles": ["b"], "bundle_dirs": ["/b/b"]}
    _check_settings(tmp_path, new, force=False)
    assert new["folds"] == [0, 1, 2] and requested == [0, 2]  # the grid still runs only the folds asked for
    assert new["bundles"] == ["a", "b"]
    with pytest.raises(ValueError, match=r"other settings \(time_budget_minutes: 30.0 -> 60.0\)"):
        _check_settings(tmp_path, old | {"time_budget_minutes": 60.0}, force=False)
