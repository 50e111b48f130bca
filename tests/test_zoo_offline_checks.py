"""Model Zoo checks, offline: metadata against both schemas, network I/O, TorchScript export."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from shared_components.paths import schemas_dir
from tests.helpers import HIPPO

SCHEMAS = sorted(schemas_dir().glob("meta_schema_*.json"))


def _bundle_cmd(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=bundle, capture_output=True, text=True)


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda p: p.stem)
def test_verify_metadata_offline(bundles_dir, schema):
    assert len(SCHEMAS) == 2, f"expected the two shared schemas, found {SCHEMAS}"
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
