"""Model Zoo export: vendored code, rewritten configs, the zoo's offline checks and a smoke run, all without
``shared_components`` importable; TorchScript and ONNX compared with the eager network; DynUNet shipped without its
deep-supervision heads; weights as zoo large files; README and metadata saying exactly what ships. The zoo's own CI
(verify_bundle.py, format tools, unit-test pattern) on one export per network family: ``tests/test_zoo_ci.py``."""

from __future__ import annotations

import ast
import functools
import hashlib
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from shared_components.paths import REPO_ROOT, shipped_datalist
from shared_components.shipping import isolation, runtime, vendor
from shared_components.shipping.export import (
    MONAI_LABEL_VERSION,
    PY310_NEWEST,
    export_bundle,
    export_dest,
    pinned_version,
    zoo_name,
)
from tests.helpers import HIPPO

DYNUNET = "hippocampus_mri_dynunet"


@pytest.fixture(scope="module")
def hippo_export(tmp_path_factory, bundles_dir):
    out = tmp_path_factory.mktemp("zoo")
    return export_bundle(bundles_dir / HIPPO, out, make_zip=True)


@pytest.fixture(scope="module")
def dynunet_export(tmp_path_factory, bundles_dir):
    """The DynUNet hippocampus bundle (deep supervision in training), exported with its shipped weights (the
    untrained export is described by the BraTS test below)."""
    return export_bundle(bundles_dir / DYNUNET, tmp_path_factory.mktemp("zoo_dynunet"))


def _isolated_python(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, cwd=cwd, env=isolation.isolated_env(), capture_output=True, text=True, timeout=600)


def test_zoo_name():
    assert zoo_name("hippocampus_mri_unet") == "hippocampus_mri_unet_segmentation"
    assert zoo_name("Spleen-CT seg") == "spleen_ct_seg_segmentation"
    assert zoo_name("spleen_ct_segmentation") == "spleen_ct_segmentation"
    assert zoo_name("aneurysm_mra_retinanet", "detection") == "aneurysm_mra_retinanet_detection"
    assert zoo_name("lung_nodule_ct_detection") == "lung_nodule_ct_detection"


def test_vendor_copies_only_what_is_used_with_relative_imports(tmp_path):
    refs = {"training.prepare_network", "transforms.infer_transforms"}
    out = vendor.vendor(refs, tmp_path, bundle="x")
    files = {str(p.relative_to(tmp_path)) for p in out.files.values()}
    assert "scripts/training/presets.py" in files and "scripts/transforms/chains.py" in files
    assert "scripts/transforms/labels.py" in files  # imported by chains.py
    assert not any("/data/" in f or "/evaluation/" in f for f in files)  # not used: not copied
    for f in files:
        tree = ast.parse((tmp_path / f).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith("shared_components"), f"{f}: {ast.unparse(node)}"
    assert "prepare_network" in (tmp_path / "scripts" / "training" / "__init__.py").read_text()


def test_vendored_code_keeps_the_zoo_format(tmp_path):
    """The zoo's black/isort/flake8 rules that vendoring itself could break: a short first-line header, generated
    ``__init__`` files within 120 columns, rewritten relative imports sorted as isort (profile black) sorts them
    (the furthest package first), trailing comments (``# noqa: E402``) kept on the rewritten imports."""
    refs = {"evaluation.SegmentationMetrics", "data.make_dataset", "training.prepare_network"}
    out = vendor.vendor(refs, tmp_path, bundle="hippocampus_mri_unet_segmentation")
    for path in out.files.values():
        lines = path.read_text().splitlines()
        assert all(len(line) <= vendor.LINE_LENGTH for line in lines[:3]), f"{path}: {lines[:3]}"
        relative = [line for line in lines if vendor.RELATIVE_IMPORT.match(line + "\n")]
        for block in _runs(lines, relative):
            keys = [(-(len(m) - len(m.lstrip("."))), m.lstrip(".").lower()) for m in block]
            assert keys == sorted(keys), f"{path}: relative imports out of isort order: {block}"
        if path.name == "__init__.py" and path.parent != tmp_path / "scripts":
            assert all(len(line) <= vendor.LINE_LENGTH for line in lines), path
    header = (tmp_path / "scripts" / "data" / "datasets.py").read_text().splitlines()[0]
    assert header == "# Vendored from monai-seg-bundles (Apache-2.0): shared_components/data/datasets.py"
    assert vendor._sort_relative_imports(["from .b import x\n", "from ..a import y, Z\n", "from .b import w\n"]) == [
        "from ..a import Z, y\n",
        "from .b import w, x\n",
    ]
    long = vendor._import_line("", ".m", [f"name_{i}" for i in range(14)])
    assert long.startswith("from .m import (\n    name_0, name_1") and max(map(len, long.splitlines())) <= 120
    for path in out.files.values():  # plots.py imports after matplotlib.use(): each import says noqa E402
        source = vendor._module_file(next(m for m, f in out.files.items() if f == path))
        if "# noqa: E402" in source.read_text():
            assert all(
                line.endswith("# noqa: E402")
                for line in path.read_text().splitlines()
                if line.startswith("from .") and "E402" in source.read_text()
            ), path


def _runs(lines: list[str], selected: list[str]) -> Iterator[list[str]]:
    """Consecutive runs of ``selected`` lines in ``lines``, as module names."""
    run: list[str] = []
    for line in [*lines, ""]:
        if line in selected:
            run.append(line.split()[1])
        elif run:
            yield run
            run = []


def test_isolated_environment_cannot_import_shared_components():
    assert "No module named 'shared_components'" in isolation.prove_isolated()


def test_export_refuses_untrained_and_existing(tmp_path, bundles_dir):
    fake = tmp_path / "b"
    shutil.copytree(bundles_dir / HIPPO, fake, ignore=shutil.ignore_patterns("models", "logs", "eval", "runs"))
    with pytest.raises(FileNotFoundError, match="--untrained"):
        export_bundle(fake, tmp_path / "out")
    (tmp_path / "out" / zoo_name("b")).mkdir(parents=True)
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_bundle(fake, tmp_path / "out", untrained=True)
    with pytest.raises(ValueError, match="URL"):
        export_bundle(fake, tmp_path / "out", untrained=True, overwrite=True, large_files="dist/weights")


@pytest.mark.parametrize("name", ["../x", "a/b", "/tmp/x", ".", "..", "", "x/..", "~x"])
def test_export_name_cannot_point_outside_out(tmp_path, name):
    with pytest.raises(ValueError, match="--name"):
        export_dest(tmp_path / "out", name)
    assert export_dest(tmp_path / "out", "my_bundle-1.0") == (tmp_path / "out" / "my_bundle-1.0").resolve()


def test_export_cli_refuses_a_name_outside_out_and_deletes_nothing(tmp_path):
    """`--name ../x --overwrite` used to replace a folder outside `--out`: now a clear error, nothing touched."""
    victim = tmp_path / "x"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    cmd = [sys.executable, "scripts/export_bundle.py", HIPPO, "--out", str(tmp_path / "out"), "--name", "../x"]
    r = subprocess.run([*cmd, "--overwrite"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--name '../x'" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (victim / "keep.txt").read_text() == "precious" and not (tmp_path / "out").exists()


def test_pins_are_lowered_to_what_installs_on_python_310():
    assert pinned_version("numpy", "2.4.6") == PY310_NEWEST["numpy"]
    assert pinned_version("numpy", "1.26.4") == "1.26.4"
    assert pinned_version("torch", "2.13.0+cpu") == "2.13.0"
    assert pinned_version("nibabel", "5.4.2") == "5.4.2"


def test_deep_supervision_heads_are_optional_when_loading():
    """A DynUNet trained with deep supervision loads into the one built without it (heads dropped), which scripts
    and gives the eager outputs; weights without heads load into one with them (heads kept); everything else is
    still strict."""
    from shared_components.networks import nnunet_dynunet

    def net(ds: bool) -> torch.nn.Module:
        model = nnunet_dynunet(1, 3, [32, 32, 32], None, base_filters=4, max_filters=16, deep_supervision=ds)
        return runtime.optional_deep_supervision_heads(model)

    torch.manual_seed(0)
    trained, infer = net(True).eval(), net(False).eval()
    infer.load_state_dict(trained.state_dict())
    heads = {k for k in trained.state_dict() if runtime.is_head_key(k)}
    assert heads and set(trained.state_dict()) - set(infer.state_dict()) == heads
    assert runtime.inference_state(trained.state_dict()).keys() == infer.state_dict().keys()
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager, scripted = trained(x), torch.jit.script(infer)(x)
    torch.testing.assert_close(scripted, eager, rtol=1e-5, atol=1e-5)
    retrain = net(True)
    before = {k: v.clone() for k, v in retrain.state_dict().items() if k in heads}
    retrain.load_state_dict(infer.state_dict())  # the shipped weights (no heads) into the training network
    assert all(torch.equal(retrain.state_dict()[k], v) for k, v in before.items())
    assert all(torch.equal(retrain.state_dict()[k], v) for k, v in infer.state_dict().items())
    bad = {**trained.state_dict(), "extra.weight": torch.zeros(1)}
    with pytest.raises(RuntimeError, match="extra.weight"):
        infer.load_state_dict(bad)
    missing = dict(infer.state_dict())
    missing.pop(next(iter(missing)))
    with pytest.raises(RuntimeError, match="Missing key"):
        trained.load_state_dict(missing)


DYNUNET_CHECK = """
import json, sys, torch
from monai.bundle import ConfigParser
bundle = sys.argv[1]
sys.path.insert(0, bundle)

def parser(configs):
    p = ConfigParser()
    p.read_config([f"{bundle}/configs/{c}.json" for c in configs])
    p.read_meta(f"{bundle}/configs/metadata.json")
    p["bundle_root"] = bundle
    return p

infer = parser(["inference"])
net = infer.get_parsed_content("network_def").eval()
net.load_state_dict(torch.load(f"{bundle}/models/model.pt", weights_only=True))  # strict
ts = torch.jit.load(f"{bundle}/models/model.ts").eval()
x = torch.randn(2, 1, 40, 56, 40, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    err = float((ts(x) - net(x)).abs().max())
# a checkpoint of the training network (deep supervision) loads into the inference network, the shipped weights
# (no heads) into the training and evaluation networks
trained = parser(["train"]).get_parsed_content("network")
assert any("deep_supervision_heads" in k for k in trained.state_dict())
infer.get_parsed_content("network").load_state_dict(trained.state_dict())
shipped = torch.load(f"{bundle}/models/model.pt", weights_only=True)
trained.load_state_dict(shipped)
parser(["train", "evaluate"]).get_parsed_content("network").load_state_dict(shipped)
print(json.dumps({"err": err, "scale": float(net(x).abs().max())}))
"""


@pytest.mark.slow
def test_dynunet_export_scripts_and_matches_eager(dynunet_export):
    """DynUNet's deep-supervision heads do not script: the export infers without them (they only train), so the
    zoo's ckpt_export passes, models/model.ts is scripted, and it gives the eager network's outputs; a checkpoint
    trained with the heads (a new training run's) still loads for inference, the shipped one for training."""
    r = dynunet_export
    assert not isolation.failures(r.checks), "\n".join(map(str, isolation.failures(r.checks)))
    assert r.deep_supervision_dropped and r.torchscript and r.exports["ts"]["method"] == "scripted"
    assert next(c for c in r.checks if c.check == "ckpt_export").level == "error"  # not a tolerated failure
    inference = json.loads((r.path / "configs" / "inference.json").read_text())
    train = json.loads((r.path / "configs" / "train.json").read_text())
    assert inference["network_def"]["deep_supervision"] is False and train["network_def"]["deep_supervision"]
    assert all("optional_deep_supervision_heads(" in c["network"] for c in (inference, train))
    state = torch.load(r.path / "models" / "model.pt", weights_only=True)
    assert not any(runtime.is_head_key(k) for k in state)
    out = _isolated_python(DYNUNET_CHECK, str(r.path), cwd=r.path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["err"] <= 1e-4 * max(result["scale"], 1.0), result


@pytest.mark.slow
def test_hippocampus_export_passes_the_zoo_checks(hippo_export):
    r = hippo_export
    assert r.name == "hippocampus_mri_unet_segmentation" and r.path.name == r.name
    failed = isolation.failures(r.checks)
    assert not failed, "\n".join(map(str, failed))
    names = {c.check for c in r.checks if c.ok}
    expected = {"files", "version/changelog", "inference keys", "train keys", "inference properties"}
    expected |= {"verify_net_in_out", "ckpt_export", "models/model.ts vs eager", "models/model.onnx vs eager"}
    expected |= {"verify_metadata meta_schema_20240725.json"}  # the schema the metadata names
    expected |= {"pre-commit rules", "monai-label properties", "metadata pins"}
    assert expected <= names
    assert r.torchscript and r.onnx and (r.path / "models" / "model.ts").is_file()
    # configs: self-contained, JSON with 4-space indent, zoo data location, the shipped split in the bundle
    for cfg in (r.path / "configs").glob("*.json"):
        text = cfg.read_text()
        assert "shared_components" not in text and str(REPO_ROOT) not in text, cfg
        assert text.startswith("{\n    "), cfg
    train = json.loads((r.path / "configs" / "train.json").read_text())
    assert "$import scripts" in train["imports"]
    assert train["dataset_dir"] == "/workspace/data/Task04_Hippocampus"
    assert json.loads((r.path / "configs" / "datalist.json").read_text()) == json.loads(
        Path(shipped_datalist("Task04_Hippocampus")).read_text()
    )
    for py in (r.path / "scripts").rglob("*.py"):  # (docstrings may still name where the code came from)
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import | ast.Name):
                assert "shared_components" not in ast.unparse(node), f"{py}: {ast.unparse(node)}"
    with zipfile.ZipFile(r.zip) as zf:
        members = set(zf.namelist())
    for rel in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "LICENSE", "docs/README.md"):
        assert f"{r.name}/{rel}" in members


def _imported(export: Path) -> set[str]:
    """Top-level modules the exported code and configs import."""
    mods = set()
    for py in (export / "scripts").rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    configs = " ".join(p.read_text() for p in (export / "configs").glob("*.json"))
    return mods | set(re.findall(r"\$import (\w+)", configs)) | set(re.findall(r'"_target_": "(\w+)\.', configs))


# packages a bundle needs through MONAI rather than by importing them (NIfTI IO, TensorBoard logging, transformers)
THROUGH_MONAI = {"nibabel", "tensorboard", "einops"}


@pytest.mark.slow
def test_metadata_pins_what_the_code_imports_and_declares_monai_label(hippo_export):
    import importlib.metadata

    meta = json.loads((hippo_export.path / "configs" / "metadata.json").read_text())
    dists = importlib.metadata.packages_distributions()
    imported = {d for m in _imported(hippo_export.path) for d in dists.get(m, [])}
    pins = meta["required_packages_version"]
    assert {"pytorch-ignite", "nibabel", "scipy", "pandas"} <= set(pins)
    extra = {p for p in pins if p not in THROUGH_MONAI and not (p in imported or p.startswith("itk"))}
    assert not extra, f"pinned but not imported by the exported code: {extra}"
    assert not {"torch", "monai", "numpy", "monai-seg-bundles", "mlflow"} & set(pins)
    for dist, version in {**pins, "numpy": meta["numpy_version"]}.items():
        assert version == pinned_version(dist, importlib.metadata.version(dist)), dist
    assert "optional_packages_version" not in meta  # deprecated: MONAI warns about it on every run
    assert meta["supported_apps"] == {"monai-label": MONAI_LABEL_VERSION}


def test_monai_label_version_is_the_one_the_check_installs():
    script = (REPO_ROOT / "scripts" / "monailabel_check.sh").read_text()
    assert f"monailabel=={MONAI_LABEL_VERSION}" in script


def _describes_what_ships(export: Path, trained: bool) -> None:
    readme = (export / "docs" / "README.md").read_text()
    meta = json.loads((export / "configs" / "metadata.json").read_text())
    configs = sorted(p.name for p in (export / "configs").iterdir())
    for name in configs:
        assert f"configs/{name}" in readme, f"README does not list configs/{name}"
    for rel in re.findall(r"`(configs/[\w.]+)`", readme):
        assert (export / rel).is_file(), f"README names {rel}, which is not shipped"
    for rel in ("models/model.pt", "models/model.ts", "models/model.onnx"):
        listed = (export / "large_files.yml").is_file() and rel in (export / "large_files.yml").read_text()
        assert ((export / rel).is_file() or listed) == (f"`{rel}`:" in readme), rel
    for text in (readme, meta["description"]):
        assert not re.search(r"configs/\w+\.yaml", text), "names YAML configs, only JSON ships"
        assert "No trained weights are shipped" not in text and "`models/` is empty" not in text
        assert ("UNTRAINED" in text.upper() and "initialised" in text) == (not trained), text[:300]
    assert "pip install -e" not in readme and "shared_components/" not in readme
    if not trained:
        assert meta["eval_metrics"] == {}
        assert "## Performance\n\nNone: this untrained export" in readme
    else:
        assert "trained weights (see *Performance*)" in readme


@pytest.mark.slow
def test_readme_and_metadata_describe_what_ships(hippo_export, dynunet_export):
    _describes_what_ships(hippo_export.path, trained=True)
    _describes_what_ships(dynunet_export.path, trained=True)
    readme = " ".join((dynunet_export.path / "docs" / "README.md").read_text().split())
    assert "`network_def#deep_supervision: false`" in readme


@pytest.mark.slow
def test_readme_of_a_bundle_without_a_shipped_datalist(tmp_path, bundles_dir):
    """BraTS reads its datalist from the dataset folder (made by the collection's converter): the export says so
    instead of pointing at a configs/datalist.json it does not ship."""
    r = export_bundle(bundles_dir / "brats_mri_segresnet", tmp_path, untrained=True, onnx=False)
    assert not isolation.failures(r.checks), "\n".join(map(str, isolation.failures(r.checks)))
    assert not (r.path / "configs" / "datalist.json").exists()
    readme = " ".join((r.path / "docs" / "README.md").read_text().split())
    assert "configs/datalist.json" not in readme and "`<dataset_dir>/datalist.json`" in readme
    _describes_what_ships(r.path, trained=False)


@pytest.mark.slow
def test_broken_export_fails_the_zoo_checks(hippo_export, tmp_path):
    broken = tmp_path / hippo_export.name
    shutil.copytree(hippo_export.path, broken)
    (broken / "LICENSE").unlink()
    meta = json.loads((broken / "configs" / "metadata.json").read_text())
    meta["version"] = "9.9.9"  # not in the changelog
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 5  # the network has 3
    del meta["network_data_format"]["outputs"]["pred"]["channel_def"]  # MONAI Label's labels
    (broken / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4))
    (broken / "docs" / "README.md").write_text("trailing space \n")
    checks, _ = isolation.verify_export(broken)
    failed = {c.check for c in isolation.failures(checks)}
    assert {"files", "version/changelog", "verify_net_in_out", "monai-label properties", "pre-commit rules"} <= failed


@pytest.fixture
def weights_server() -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a folder: (base URL, folder)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=folder)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/weights", Path(folder)
        finally:
            server.shutdown()
            server.server_close()


@pytest.mark.slow
def test_large_files_leave_the_bundle_and_download_back(tmp_path, bundles_dir, weights_server):
    """`--large_files URL` ships no weights but a zoo `large_files.yml` (path, url, hash_val, hash_type);
    `python -m monai.bundle download_large_files` restores them from that URL and the restored bundle verifies."""
    url, served = weights_server
    r = export_bundle(bundles_dir / HIPPO, tmp_path / "out", large_files=url)
    assert not isolation.failures(r.checks)
    assert not list((r.path / "models").glob("*")), "weights must leave the bundle folder"
    entries = yaml.safe_load((r.path / "large_files.yml").read_text())["large_files"]
    assert {e["path"] for e in entries} == {"models/model.pt", "models/model.ts", "models/model.onnx"}
    for e in entries:
        assert set(e) == {"path", "url", "hash_val", "hash_type"} and e["hash_type"] == "sha256"
        upload = r.large_files / e["url"].rsplit("/", 1)[1]
        assert e["url"].startswith(url + "/") and hashlib.sha256(upload.read_bytes()).hexdigest() == e["hash_val"]
    shutil.copytree(r.large_files, served / "weights")
    readme = (r.path / "docs" / "README.md").read_text()
    assert "large_files.yml" in readme and "download_large_files" in readme
    cmd = [sys.executable, "-m", "monai.bundle", "download_large_files", "--bundle_path", str(r.path)]
    d = subprocess.run(cmd, env=isolation.isolated_env(), capture_output=True, text=True, timeout=300)
    assert d.returncode == 0, d.stderr[-2000:]
    for e in entries:
        assert hashlib.sha256((r.path / e["path"]).read_bytes()).hexdigest() == e["hash_val"]
    checks, _ = isolation.verify_export(r.path)
    assert not isolation.failures(checks), "\n".join(map(str, isolation.failures(checks)))


@pytest.mark.slow
def test_exported_copy_trains_evaluates_infers_without_shared_components(hippo_export, tmp_path, hippo_dir):
    datalist = isolation.smoke_datalist(hippo_export.path / "configs" / "datalist.json", tmp_path / "dl.json")
    images = sorted((hippo_dir / "imagesTr").glob("hippocampus_00[13].nii.gz"))
    res = isolation.smoke_run(hippo_export.path, tmp_path / "run", hippo_dir, datalist, images, {"batch_size": 2})
    log = res["log"].read_text()
    assert res["checkpoint"].is_file(), log[-2000:]
    assert list((tmp_path / "run" / "eval").glob("*.csv")), "evaluation wrote no metrics"
    assert len(res["predictions"]) == 2
    for img, pred in zip(images, res["predictions"], strict=True):
        src, out = nib.load(img), nib.load(pred)
        assert out.shape == src.shape and set(np.unique(np.asarray(out.dataobj)).tolist()) <= {0, 1, 2}
    assert "shared_components" not in log.replace("No module named 'shared_components'", "")
