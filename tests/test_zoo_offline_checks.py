"""Model Zoo checks, offline: metadata against both schemas, network I/O, TorchScript export, the pre-commit file
rules, and the standalone checks kept in sync with the exporter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from shared_components.paths import named_schema
from tests.helpers import HIPPO


def _bundle_cmd(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=bundle, capture_output=True, text=True)


def test_verify_metadata_offline(bundles_dir):
    """The stock ``verify_metadata`` against the local copy of the schema the metadata names (what the zoo runs)."""
    schema = named_schema(json.loads((bundles_dir / HIPPO / "configs" / "metadata.json").read_text()))
    assert schema.name == "meta_schema_20240725.json"
    r = _bundle_cmd(
        bundles_dir / HIPPO, "verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(schema)
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "metadata is verified with no error" in r.stdout + r.stderr


def test_verify_net_in_out(bundles_dir):
    r = _bundle_cmd(
        bundles_dir / HIPPO,
        "verify_net_in_out",
        "network_def",
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        "configs/inference.yaml",
        "--device",
        "cpu",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "data shape of network is verified with no error" in r.stdout + r.stderr


def test_ckpt_export_torchscript_matches_eager(bundles_dir, tmp_path):
    bundle = bundles_dir / HIPPO
    ts = tmp_path / "model.ts"
    r = _bundle_cmd(
        bundle,
        "ckpt_export",
        "network_def",
        "--filepath",
        str(ts),
        "--ckpt_file",
        "models/model.pt",
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        "configs/inference.yaml",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "inference.yaml")
    net = parser.get_parsed_content("network_def").eval()
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True))
    scripted = torch.jit.load(str(ts)).eval()
    x = torch.randn(2, 1, 40, 56, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager, script = net(x), scripted(x)
    torch.testing.assert_close(script, eager, rtol=1e-4, atol=1e-4)
    assert eager.abs().max() > 0


def test_a_failed_export_is_reported_and_its_file_removed(tmp_path):
    """An export that fails its check leaves no file behind (it must not ship) and says why; one that passes is ok."""
    from shared_components.shipping.zoo_offline_checks import _kept_if_verified

    bad, good = tmp_path / "model.onnx", tmp_path / "model.ts"
    info: dict = {"ok": False}
    with _kept_if_verified(str(bad), info):
        bad.write_bytes(b"half-written")
        raise AssertionError("models/model.onnx differs from the eager network")
    assert not bad.exists() and info["ok"] is False and "differs from the eager network" in info["detail"]
    info = {"ok": False}
    with _kept_if_verified(str(good), info):
        good.write_bytes(b"exported")
    assert good.read_bytes() == b"exported" and info == {"ok": True}


def _tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def test_precommit_rules_of_the_zoo(tmp_path):
    """The file rules of the zoo's pre-commit hooks: a clean tree passes, each broken rule is named."""
    from shared_components.shipping.zoo_offline_checks import precommit_rules

    good = {
        "configs/metadata.json": json.dumps({"b": 1, "a": [1, 2]}, indent=4) + "\n",  # key order kept
        "large_files.yml": 'large_files:\n- path: "models/model.pt"\n',
        "scripts/a.py": '# Vendored from x\n"""Doc."""\n\nX = 1\n',
        "docs/table.csv": "a,b\r\n1,2\r\n",  # CRLF throughout is not mixed
        "models/model.pt": b"\x00\x01 \n",
    }
    assert "docstring first" in precommit_rules(str(_tree(tmp_path / "good", good)))
    bad = {
        "configs/metadata.json": json.dumps({"a": 1}) + "\n",
        "docs/README.md": "text \n",
        "docs/notes.md": "no newline",
        "docs/mixed.txt": "a\r\nb\n",
        "large_files.yml": "large_files: [\n",
        "scripts/b.py": 'X = 1\n"""Late docstring."""\n',
        "run.sh": "echo hi\n",
    }
    root = _tree(tmp_path / "bad", bad)
    (root / "run.sh").chmod(0o755)
    with pytest.raises(ValueError) as e:
        precommit_rules(str(root))
    for rel in bad:
        assert rel in str(e.value), rel


def test_offline_checks_stay_in_sync_with_the_exporter():
    """zoo_offline_checks.py runs standalone (no shared_components): its copies of the exporter's constants match."""
    from shared_components.shipping import export, runtime, zoo_offline_checks

    assert zoo_offline_checks.NOT_SCRIPTABLE == export.NOT_SCRIPTABLE
    assert zoo_offline_checks.HEAD_MODULES == runtime.HEAD_MODULES
    assert set(export.SUPPORTED_APPS) <= set(zoo_offline_checks.APP_PROPERTIES)


def test_monai_label_properties_are_monai_property_definitions():
    """Each MONAI Label property is a MONAI bundle property (same id) or a metadata field MONAI Label reads."""
    from monai.bundle.properties import InferProperties, MetaProperties

    from shared_components.shipping.zoo_offline_checks import APP_PROPERTIES

    props = APP_PROPERTIES["monai-label"]
    for name, p in props["InferProperties"].items():
        assert p["required"] and InferProperties[name]["id"] == p["id"], name
    for name, p in props["MetaProperties"].items():
        assert p["required"] and MetaProperties[name]["id"].replace("::", "#") == p["id"], name
