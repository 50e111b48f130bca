"""The MONAI Model Zoo's own CI on exports, one bundle per network family (the hippocampus one: real data, CPU
sizes): the offline checks of each export; the zoo's ``ci/verify_bundle.py -m full`` (needs a copy of the zoo in
``$MONAI_MODEL_ZOO``, else skipped), also on an export whose weights are large files on a local server; its
code-format rules (black, isort, flake8 with its plugins and settings, when installed: ``$ZOO_LINT_PYTHON``); its
unit-test pattern (a fresh interpreter with the bundle root first on ``sys.path``: train 1 epoch, then
[train, evaluate], then infer, each with ``check_properties() == []``; then the torchrun variant on gloo); metadata
pins that install on Python 3.10 and 3.12 (needs PyPI, else skipped); vendored code that compiles on Python 3.10."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shared_components.bundle import scaffold
from shared_components.bundle.runner import output_overrides
from shared_components.shipping import isolation, zoo_ci
from shared_components.shipping.export import NOT_SCRIPTABLE, ExportResult, export_bundle
from tests.helpers import one_epoch, tiny_overrides

pytestmark = pytest.mark.slow

FAMILIES = sorted(p.stem for p in (scaffold.SPECS_DIR / "models").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (scaffold.SPECS_DIR / "datasets").glob("*.yaml"))
NO_ZOO = (
    f"set {zoo_ci.ZOO_ENV} to a copy of the MONAI Model Zoo (a checkout, or `git clone --mirror "
    "https://github.com/Project-MONAI/model-zoo`) to run its ci/verify_bundle.py"
)


def _bundle_of(model: str) -> Path | None:
    """One bundle of a network family, the hippocampus one when it exists (the smallest data)."""
    names = {b.name: b for b in scaffold.all_bundles()}
    for dataset in ["hippocampus_mri", *DATASETS]:
        if f"{dataset}_{model}" in names:
            return names[f"{dataset}_{model}"]
    return None


@pytest.fixture(scope="module")
def family_export(tmp_path_factory):
    """``family_export(model)``: the export of one bundle of the family (initialised weights when untrained),
    made once per module."""
    cache: dict[str, ExportResult] = {}

    def get(model: str) -> ExportResult:
        if model not in cache:
            bundle = _bundle_of(model)
            assert bundle is not None, f"no {model} bundle in bundles/"
            untrained = not (bundle / "models" / "model.pt").is_file()
            cache[model] = export_bundle(bundle, tmp_path_factory.mktemp(f"zoo_{model}"), untrained=untrained)
        return cache[model]

    return get


@pytest.fixture(scope="module")
def zoo() -> Path:
    path = zoo_ci.zoo_dir()
    if path is None:
        pytest.skip(NO_ZOO)
    return path


@pytest.fixture(scope="module")
def six_cases(tmp_path_factory, hippo_dir) -> Path:
    """6 real hippocampus cases: 4 train (fold 1), 2 validate (fold 0, one per rank under torchrun)."""
    from shared_components.data.converters.msd import msd_datalist

    cases = msd_datalist(hippo_dir, folds=5, seed=0)["training"][:6]
    for i, e in enumerate(cases):
        e["fold"] = 0 if i < 2 else 1
    path = tmp_path_factory.mktemp("zoo_cases") / "datalist.json"
    path.write_text(json.dumps({"training": cases}, indent=4))
    return path


@pytest.mark.parametrize("model", FAMILIES)
def test_family_export_passes_the_offline_checks(model, family_export):
    r = family_export(model)
    failed = isolation.failures(r.checks)
    assert not failed, "\n".join(map(str, failed))
    assert r.torchscript, r.exports.get("ts")  # scripted, or traced where MONAI cannot script (SwinUNETR only)
    assert (r.exports["ts"]["method"] == "scripted") == (r.network not in NOT_SCRIPTABLE), r.exports["ts"]
    if model == "swin_unetr":  # hippocampus patch 32x64x32: a 1x2x1 bottleneck torch's legacy ONNX exporter refuses
        assert not r.onnx and "instance_norm for unknown channel size" in r.exports["onnx"]["detail"], r.exports
        assert "no `models/model.onnx`" in (r.path / "docs" / "README.md").read_text()  # the export says so
        return
    assert r.onnx, r.exports.get("onnx")  # every other family exports to ONNX that onnxruntime runs like eager


@pytest.mark.parametrize("model", FAMILIES)
def test_zoo_verify_bundle_full(model, family_export, zoo):
    """The zoo's own ci/verify_bundle.py -m full passes with no exclusion, except SwinUNETR's TorchScript (MONAI
    cannot script it; the zoo excludes its own SwinUNETR bundle the same way); its property check runs (MONAI
    Label's properties, from supported_apps)."""
    r = family_export(model)
    exclude = r.network in NOT_SCRIPTABLE
    p = zoo_ci.verify_bundle(r.path, zoo, mode="full", exclude_torchscript=exclude)
    assert p.returncode == 0, p.stdout[-5000:]
    assert "check properties for workflow successfully []" in p.stdout, "the property check did not run"
    assert "data shape is verified correctly" in p.stdout
    assert ("export weights into TorchScript module successfully" in p.stdout) == (not exclude), p.stdout[-3000:]


@pytest.fixture
def weights_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path/www``: (base URL of ``/weights``, the served folder)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/weights", www
    finally:
        server.shutdown()
        server.server_close()


def test_zoo_verify_bundle_downloads_large_files(tmp_path, bundles_dir, zoo, weights_server):
    """An export with `--large_files`: the zoo's verify_bundle.py downloads the weights first, then verifies."""
    url, www = weights_server
    r = export_bundle(bundles_dir / "hippocampus_mri_unet", tmp_path / "out", large_files=url, onnx=False)
    shutil.copytree(r.large_files, www / "weights")
    assert not (r.path / "models" / "model.pt").exists()
    p = zoo_ci.verify_bundle(r.path, zoo, mode="full")
    assert p.returncode == 0, p.stdout[-5000:]
    assert "Provided TorchScript module is verified correctly" in p.stdout  # the downloaded model.ts loads


@pytest.mark.parametrize("model", FAMILIES)
def test_zoo_format_rules(model, family_export):
    """black --skip-magic-trailing-comma, isort (profile black) and flake8 (bugbear, comprehensions, naming) with
    the zoo's settings find nothing in the export (its own copy's settings when $MONAI_MODEL_ZOO is set)."""
    versions = zoo_ci.format_tools()
    if versions is None:
        pins = " ".join(f"{k}=={v}" for k, v in zoo_ci.FORMAT_TOOLS.items())
        msg = f"the zoo's format tools are not installed: pip install {pins} (or set {zoo_ci.LINT_ENV})"
        if os.environ.get("CI"):  # .ci/run installs them
            pytest.fail(msg)
        pytest.skip(msg)
    results = zoo_ci.format_check(family_export(model).path, zoo_ci.zoo_dir())
    report = {t: (p.stdout + p.stderr)[-3000:] for t, p in results.items() if p.returncode != 0}
    assert not report, f"{report}\n(tools: {versions}; pinned: {zoo_ci.FORMAT_TOOLS})"


def test_vendored_code_compiles_on_python_310(family_export):
    """The zoo CI runs Python 3.10: the vendored code must not use 3.11+ syntax."""
    python = os.environ.get("ZOO_PYTHON310") or shutil.which("python3.10")
    if python is None or subprocess.run([python, "-c", "pass"], capture_output=True).returncode != 0:
        pytest.skip("no python3.10 on PATH (or set ZOO_PYTHON310): cannot compile the vendored code for 3.10")
    for model in FAMILIES:
        scripts = family_export(model).path / "scripts"
        r = subprocess.run([python, "-m", "compileall", "-q", str(scripts)], capture_output=True, text=True)
        assert r.returncode == 0, f"{model}: {r.stdout}{r.stderr}"
        for cache in scripts.rglob("__pycache__"):
            shutil.rmtree(cache)


def _pypi_reachable() -> bool:
    cmd = [sys.executable, "-m", "pip", "index", "versions", "pip", "--disable-pip-version-check"]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def test_metadata_pins_install_on_python_310_and_312(family_export, tmp_path):
    """Every version an export pins has a wheel for Python 3.10 and 3.12 (`pip download --no-deps --only-binary`);
    torch, whose wheel is ~0.5 GB, through the index's list of versions with such a wheel."""
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable: cannot check that the metadata pins install on Python 3.10 and 3.12")
    pins: dict[str, str] = {}
    for model in FAMILIES:
        pins.update(isolation.metadata_pins(family_export(model).path))
    for python in ("3.10", "3.12"):
        common = ["--python-version", python, "--only-binary=:all:", "--disable-pip-version-check"]
        big = {d: v for d, v in pins.items() if d == "torch"}
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *common, "-d", str(tmp_path / python)]
        r = subprocess.run([*cmd, *(f"{d}=={v}" for d, v in pins.items() if d not in big)], capture_output=True)
        assert r.returncode == 0, f"Python {python}: {r.stderr.decode()[-3000:]}"
        for dist, version in big.items():
            cmd = [sys.executable, "-m", "pip", "index", "versions", dist, *common]
            out = subprocess.run(cmd, capture_output=True, text=True).stdout
            assert version in out.replace(",", " ").split(), f"{dist}=={version} has no wheel for Python {python}"


UNIT_TEST = """
import json, os, sys
bundle, overrides, infer = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
sys.path.insert(0, bundle)  # the zoo's CI puts the bundle root first, so `scripts` is the bundle's package
from monai.bundle import ConfigWorkflow

def cfg(name):
    return os.path.join(bundle, "configs", name)

def check_workflow(workflow):
    workflow.initialize()
    missing = workflow.check_properties()
    assert missing == [], f"check properties for workflow failed: {missing}"
    workflow.run()
    workflow.finalize()

common = {"logging_file": cfg("logging.conf"), "meta_file": cfg("metadata.json")}
check_workflow(ConfigWorkflow(workflow_type="train", config_file=cfg("train.json"), **common, **overrides))
# train.json overridden by evaluate.json: a train workflow, as the zoo's tests run it
evaluate = [cfg("train.json"), cfg("evaluate.json")]
check_workflow(ConfigWorkflow(workflow_type="train", config_file=evaluate, **common, **overrides))
check_workflow(ConfigWorkflow(workflow_type="infer", config_file=cfg("inference.json"), **common, **infer))
print("unit tests passed")
"""


def _overrides(model: str, export: Path, hippo_dir: Path, datalist: Path, out: Path) -> dict:
    return {
        "bundle_root": str(export),
        **one_epoch(hippo_dir, datalist),
        "check_data": "quick",
        **output_overrides(out),
        **tiny_overrides(model),
    }


@pytest.mark.parametrize("model", FAMILIES)
def test_zoo_unit_test_pattern(model, family_export, hippo_dir, six_cases, tmp_path):
    """The zoo's ci/unit_tests pattern on the export, in a fresh interpreter without shared_components: train one
    epoch, evaluate, infer (with the weights just trained: for DynUNet a checkpoint with deep-supervision heads
    into the inference network without them)."""
    export = family_export(model).path
    overrides = _overrides(model, export, hippo_dir, six_cases, tmp_path / "run")
    image = json.loads(six_cases.read_text())["training"][0]["image"]
    infer = {
        "bundle_root": str(export),
        "dataset_dir": str(hippo_dir),
        "input_data": [str(hippo_dir / image)],
        "output_dir": str(tmp_path / "pred"),
        "ckpt_path": str(tmp_path / "run" / "models" / "model.pt"),
        "num_workers": 0,
        **tiny_overrides(model),
    }
    cmd = [sys.executable, "-c", UNIT_TEST, str(export), json.dumps(overrides), json.dumps(infer)]
    env = isolation.isolated_env({"CUDA_VISIBLE_DEVICES": ""})
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0 and "unit tests passed" in r.stdout, (r.stdout + r.stderr)[-5000:]
    assert list((tmp_path / "run" / "eval").glob("*.csv")), "evaluation wrote no metrics"
    assert len(list((tmp_path / "pred").rglob("*.nii.gz"))) == 1


def _export_overridden_config(configs: list[Path], overrides: dict, path: Path) -> Path:
    """The zoo's export_overrided_config: the merged configs with the overrides, as one JSON file."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(c) for c in configs])
    parser.update(pairs=overrides)
    ConfigParser.export_config_file(parser.config, str(path), indent=4)
    return path


def _torchrun(config: Path, export: Path, log: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    cmd += ["-m", "monai.bundle", "run", "--config_file", str(config)]
    cmd += ["--meta_file", str(export / "configs" / "metadata.json")]
    cmd += ["--logging_file", str(export / "configs" / "logging.conf")]
    env = isolation.isolated_env({"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    env["PYTHONPATH"] = os.pathsep.join([str(export), env["PYTHONPATH"]])  # the zoo: PYTHONPATH=bundle_root
    with open(log, "a") as f:
        r = subprocess.run(cmd, cwd=log.parent, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=900)
    assert r.returncode == 0, log.read_text()[-5000:]


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


CHECK_CONFIG = """
import sys
sys.path.insert(0, sys.argv[1])
from monai.bundle import ConfigWorkflow
w = ConfigWorkflow(workflow_type="train", config_file=sys.argv[2], meta_file=sys.argv[3], logging_file=sys.argv[4])
w.initialize()
assert w.check_properties() == [], w.check_properties()
"""


@pytest.mark.parametrize("model", FAMILIES)
def test_zoo_unit_test_pattern_dist(model, family_export, hippo_dir, six_cases, tmp_path):
    """The zoo's *_dist unit tests: the overridden [train, multi_gpu_train] config under torchrun (2 processes,
    gloo on CPU), then [train, evaluate, multi_gpu_evaluate] checked for its properties and run the same way."""
    export = family_export(model).path
    cfg = export / "configs"
    overrides = _overrides(model, export, hippo_dir, six_cases, tmp_path / "run")
    log = tmp_path / "dist.log"
    train = _export_overridden_config(
        [cfg / "train.json", cfg / "multi_gpu_train.json"], overrides, tmp_path / "train_override.json"
    )
    _torchrun(train, export, log)
    assert (tmp_path / "run" / "models" / "model.pt").is_file(), log.read_text()[-3000:]
    evaluate = _export_overridden_config(
        [cfg / "train.json", cfg / "evaluate.json", cfg / "multi_gpu_evaluate.json"],
        overrides,
        tmp_path / "eval_override.json",
    )
    args = [str(export), str(evaluate), str(cfg / "metadata.json"), str(cfg / "logging.conf")]
    # the zoo runs its *_dist tests under torchrun: the check runs in a (here: single) torch.distributed process
    rank = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": _port()}
    env = isolation.isolated_env({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", **rank})
    r = subprocess.run(
        [sys.executable, "-c", CHECK_CONFIG, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    _torchrun(evaluate, export, log)
    assert list((tmp_path / "run" / "eval").glob("*.csv")), log.read_text()[-3000:]


def test_smoke_run_uses_the_pinned_versions(family_export, hippo_dir, six_cases, tmp_path):
    """The export's smoke run with exactly the versions its metadata pins (numpy, scipy, pandas, matplotlib lowered
    for Python 3.10): a venv over this environment where pip installs the pins that differ (needs PyPI)."""
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable: cannot install the pinned versions for the smoke run")
    export = family_export("unet").path
    python = isolation.pinned_python(export, tmp_path / "venv")
    image = hippo_dir / json.loads(six_cases.read_text())["training"][0]["image"]
    overrides = {"num_workers": 0, "batch_size": 2, "max_epochs": 1}
    res = isolation.smoke_run(export, tmp_path / "run", hippo_dir, six_cases, [image], overrides, python=python)
    assert res["versions"] == isolation.metadata_pins(export), res["versions"]
    assert res["checkpoint"].is_file() and len(res["predictions"]) == 1, res["log"].read_text()[-3000:]
