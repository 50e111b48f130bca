"""The MONAI Model Zoo's offline bundle checks, as a standalone script (stdlib, torch and monai only).

``isolation.verify_export`` copies this file next to the import guard and runs it in a subprocess that cannot
import ``shared_components``, so passing it proves an exported bundle stands on its own:

    python zoo_offline_checks.py <bundle_dir> --report <report.json> --schemas <schema.json> [...] [--export ts onnx]

It mirrors what the zoo's ``ci/verify_bundle.py`` checks with the same ``monai.bundle`` functions (necessary and
preferred files, version/changelog, metadata against each schema, inference properties, network input/output,
TorchScript export and load), adds the key-naming rules of the zoo's contributing guide, and compares
``models/model.ts`` and ``models/model.onnx`` (onnxruntime) with the eager network. Writes one JSON report.
Train and evaluate properties need data, so they are proved by the smoke run instead (as in the zoo's own CI).

``--export ts onnx`` first writes ``models/model.ts`` (scripted; traced at the patch size when the network does not
script) and ``models/model.onnx`` (traced, batch axis dynamic) with ``monai.bundle``'s ``ckpt_export`` and
``onnx_export``, and keeps each only if it reproduces the eager network (a broken export is deleted and reported).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

ZOO_FILE_LIMIT_MB = 25
NECESSARY = ("configs/metadata.json", "LICENSE")
PREFERRED = ("models/model.pt", "docs/README.md", "docs/data_license.txt")
INFER_KEYS = ("bundle_root", "device", "network_def", "inferer", "output_dir")
TRAIN_KEYS = (
    "bundle_root",
    "device",
    "dataset_dir",
    "output_dir",
    "train#trainer",
    "train#trainer#max_epochs",
    "train#dataset",
    "train#dataset#data",
    "train#handlers",
    "validate#evaluator",
    "validate#handlers",
    "validate#dataset",
    "validate#dataset#data",
    "val_interval",
)


def find_config(bundle: str, name: str) -> str | None:
    for ext in ("json", "yaml", "yml"):
        path = os.path.join(bundle, "configs", f"{name}.{ext}")
        if os.path.isfile(path):
            return path
    return None


class Report:
    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []

    def run(self, name: str, fn: Callable[[], str | None], level: str = "error") -> None:
        out = io.StringIO()
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(out):
                detail = fn()
            ok = True
        except Exception as e:  # noqa: BLE001 - every failure is reported, the script goes on
            ok, detail = False, "".join(traceback.format_exception_only(type(e), e)).strip()[-1500:]
        seconds = round(time.perf_counter() - t0, 2)
        self.checks.append({"check": name, "ok": ok, "level": level, "detail": detail or "", "seconds": seconds})


_EAGER: dict[tuple[str, str], Any] = {}


def eager_reference(bundle: str, config: str) -> tuple[Any, Any]:
    """The example input and the eager network's output on it (computed once per process)."""
    import torch

    if (bundle, config) not in _EAGER:
        net, parser = eager_network(bundle, config)
        x = example_input(parser)
        with torch.no_grad():
            _EAGER[bundle, config] = (x, net(x))
    return _EAGER[bundle, config]


def eager_network(bundle: str, config: str) -> Any:
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config)
    parser.read_meta(os.path.join(bundle, "configs", "metadata.json"))
    parser["bundle_root"] = bundle
    net = parser.get_parsed_content("network_def").eval()
    state = torch.load(os.path.join(bundle, "models", "model.pt"), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net, parser


def example_input(parser: Any) -> Any:
    import torch

    image = next(iter(parser["_meta_#network_data_format#inputs"].values()))
    shape = [1, int(image["num_channels"]), *[int(s) for s in image["spatial_shape"]]]
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def compare(reference: Any, other: Any, what: str, tol: float) -> str:
    import torch

    reference = reference[0] if isinstance(reference, list | tuple) else reference
    other = other[0] if isinstance(other, list | tuple) else other
    other = torch.as_tensor(other)
    if tuple(other.shape) != tuple(reference.shape):
        raise AssertionError(f"{what} output shape {tuple(other.shape)} != eager {tuple(reference.shape)}")
    err = float((other.float() - reference.float()).abs().max())
    scale = float(reference.abs().max())
    if not err <= tol * max(scale, 1.0):
        raise AssertionError(f"{what} differs from the eager network: max abs error {err:.3g} (scale {scale:.3g})")
    return f"max abs difference to eager {err:.2e} on {list(reference.shape)}"


def export_models(bundle: str, infer: str, meta: str, kinds: list[str]) -> dict[str, dict[str, Any]]:
    """Write models/model.ts and/or models/model.onnx; each is kept only if it matches the eager network."""
    import torch
    from monai.bundle import ckpt_export, onnx_export

    x, eager = eager_reference(bundle, infer)
    shape = list(x.shape)
    common = {
        "net_id": "network_def",
        "ckpt_file": os.path.join(bundle, "models", "model.pt"),
        "meta_file": meta,
        "config_file": infer,
        "bundle_root": bundle,
    }
    out: dict[str, dict[str, Any]] = {}
    if "ts" in kinds:
        path = os.path.join(bundle, "models", "model.ts")
        info = out["ts"] = {"ok": False, "file": "models/model.ts"}
        with _kept_if_verified(path, info):
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    ckpt_export(filepath=path, **common)
                info["method"] = "scripted"
            except Exception as e:  # noqa: BLE001 - fall back to tracing at the patch size
                info["script_error"] = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                with contextlib.redirect_stdout(io.StringIO()):
                    # the trace is compared with the eager network below, so torch's own re-check is skipped
                    trace = {"check_trace": False}
                    ckpt_export(filepath=path, use_trace=True, input_shape=shape, converter_kwargs=trace, **common)
                info["method"] = f"traced at input shape {shape}"
            ts = torch.jit.load(path, map_location="cpu").eval()
            with torch.no_grad():
                info["detail"] = compare(eager, ts(x), "models/model.ts", 1e-4)
    if "onnx" in kinds:
        path = os.path.join(bundle, "models", "model.onnx")
        info = out["onnx"] = {
            "ok": False,
            "file": "models/model.onnx",
            "method": "traced (legacy exporter), batch axis dynamic",
        }
        kwargs = {
            "dynamo": False,
            "input_names": ["image"],
            "output_names": ["pred"],
            "dynamic_axes": {"image": {0: "batch"}, "pred": {0: "batch"}},
        }
        with _kept_if_verified(path, info):
            with contextlib.redirect_stdout(io.StringIO()):
                onnx_export(filepath=path, use_trace=True, input_shape=shape, converter_kwargs=kwargs, **common)
            info["detail"] = "onnxruntime: " + compare(eager, run_onnx(path, x), "models/model.onnx", 1e-3)
    return out


@contextlib.contextmanager
def _kept_if_verified(path: str, info: dict[str, Any]) -> Iterator[None]:
    """Around one export and its check against the eager network: ``info["ok"]`` when both succeed; otherwise the
    error goes to ``info["detail"]`` and the (possibly half-written) file is removed, as it is not shipped."""
    try:
        yield
        info["ok"] = True
    except Exception as e:  # noqa: BLE001 - reported, the file is not shipped
        info["detail"] = "".join(traceback.format_exception_only(type(e), e)).strip()[-600:]
        if os.path.exists(path):
            os.remove(path)


def run_onnx(path: str, x: Any) -> Any:
    import onnxruntime

    sess = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--schemas", nargs="+", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--export", nargs="*", default=[], choices=["ts", "onnx"])
    args = ap.parse_args(argv)
    bundle = os.path.abspath(args.bundle)
    sys.path.insert(0, bundle)  # the bundle's own `scripts` package, as the zoo's CI and MONAI Label do
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

    import torch
    from monai.bundle import ckpt_export, create_workflow, verify_metadata, verify_net_in_out

    r = Report()
    meta = os.path.join(bundle, "configs", "metadata.json")
    infer = find_config(bundle, "inference")
    train = find_config(bundle, "train")

    def files() -> str:
        missing = [f for f in NECESSARY + PREFERRED if not os.path.isfile(os.path.join(bundle, f))]
        if infer is None:
            missing.append("configs/inference.(json|yaml)")
        if missing:
            raise FileNotFoundError(f"missing: {missing}")
        return "necessary and preferred files present"

    def sizes() -> str:
        big = []
        for root, _, names in os.walk(bundle):
            for n in names:
                p = os.path.join(root, n)
                if os.path.getsize(p) > ZOO_FILE_LIMIT_MB * 2**20:
                    big.append(f"{os.path.relpath(p, bundle)} ({os.path.getsize(p) / 2**20:.0f} MB)")
        if big:
            raise ValueError(
                f"over the zoo's {ZOO_FILE_LIMIT_MB} MB per-file limit, list them in large_files.yml: {big}"
            )
        return f"every file under {ZOO_FILE_LIMIT_MB} MB"

    def version() -> str:
        with open(meta) as f:
            m = json.load(f)
        if m.get("version") not in m.get("changelog", {}):
            raise ValueError(f"version {m.get('version')!r} is not in the changelog")
        return f"version {m['version']}"

    def keys(config: str | None, required: tuple[str, ...]) -> Callable[[], str]:
        def check() -> str:
            from monai.bundle import ConfigParser

            if config is None:
                raise FileNotFoundError("config missing")
            parser = ConfigParser()
            parser.read_config(config)
            missing = [k for k in required if k not in parser]
            if missing:
                raise KeyError(f"{os.path.basename(config)} lacks the zoo's keys {missing}")
            return f"{os.path.basename(config)} has {len(required)} required keys"

        return check

    def metadata(schema: str) -> Callable[[], str]:
        def check() -> str:
            verify_metadata(meta_file=meta, filepath=schema)
            return os.path.basename(schema)

        return check

    def properties() -> str:
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(infer)
        with tempfile.TemporaryDirectory() as tmp:
            # the dataset is instantiated by the check but never read: a placeholder file stands in for the images
            placeholder = os.path.join(tmp, "placeholder.nii.gz")
            open(placeholder, "wb").close()
            extra = {"input_data": [placeholder]} if "input_data" in parser else {}
            w = create_workflow(
                workflow_type="infer",
                config_file=infer,
                meta_file=meta,
                logging_file=os.path.join(bundle, "configs", "logging.conf"),
                bundle_root=bundle,
                **extra,
            )
            w.initialize()
            missing = w.check_properties()
        if missing:
            raise ValueError(f"inference properties missing or not wired by reference: {missing}")
        return "inference workflow properties complete"

    def net_in_out() -> str:
        verify_net_in_out(net_id="network_def", meta_file=meta, config_file=infer, bundle_root=bundle, device="cpu")
        return "network input/output match the metadata"

    def torchscript() -> str:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt_export(
                net_id="network_def",
                filepath=os.path.join(tmp, "verify_model.ts"),
                ckpt_file=os.path.join(bundle, "models", "model.pt"),
                meta_file=meta,
                config_file=infer,
                bundle_root=bundle,
            )
            torch.jit.load(os.path.join(tmp, "verify_model.ts"))
        return "ckpt_export + torch.jit.load"

    def shipped_ts() -> str:
        if exports.get("ts", {}).get("ok"):
            return exports["ts"]["detail"]  # compared when exported in this run
        x, eager = eager_reference(bundle, infer)
        ts = torch.jit.load(os.path.join(bundle, "models", "model.ts"), map_location="cpu").eval()
        with torch.no_grad():
            return compare(eager, ts(x), "models/model.ts", 1e-4)

    def shipped_onnx() -> str:
        if exports.get("onnx", {}).get("ok"):
            return exports["onnx"]["detail"]
        x, eager = eager_reference(bundle, infer)
        onnx_path = os.path.join(bundle, "models", "model.onnx")
        return "onnxruntime: " + compare(eager, run_onnx(onnx_path, x), "models/model.onnx", 1e-3)

    exports: dict[str, dict[str, Any]] = {}
    if args.export and infer:
        try:
            exports = export_models(bundle, infer, meta, args.export)
        except Exception as e:  # noqa: BLE001 - e.g. weights that do not fit network_def: reported below
            detail = "".join(traceback.format_exception_only(type(e), e)).strip()[-600:]
            exports = {k: {"ok": False, "file": f"models/model.{k}", "detail": detail} for k in args.export}
    r.run("files", files)
    r.run("file sizes", sizes, level="warning")
    r.run("version/changelog", version)
    r.run("inference keys", keys(infer, INFER_KEYS))
    if train is not None:
        r.run("train keys", keys(train, TRAIN_KEYS))
    for schema in args.schemas:
        r.run(f"verify_metadata {os.path.basename(schema)}", metadata(schema))
    r.run("inference properties", properties)
    r.run("verify_net_in_out", net_in_out)
    ts_path = os.path.join(bundle, "models", "model.ts")
    ts_method = exports.get("ts", {}).get("method", "")
    if ts_method == "scripted":
        r.run("ckpt_export", lambda: "ckpt_export + torch.jit.load (scripted by --export)", level="warning")
    elif ts_method.startswith("traced"):

        def not_scriptable() -> str:
            raise RuntimeError(f"does not script ({exports['ts'].get('script_error', '')}); shipped traced")

        r.run("ckpt_export", not_scriptable, level="warning")
    else:
        # a network that does not script is allowed (the zoo lists it and its README says so): a warning
        r.run("ckpt_export", torchscript, level="warning")
    if os.path.isfile(ts_path):
        r.run("models/model.ts vs eager", shipped_ts)
    if os.path.isfile(os.path.join(bundle, "models", "model.onnx")):
        r.run("models/model.onnx vs eager", shipped_onnx)
    with open(args.report, "w") as f:
        json.dump({"bundle": bundle, "exports": exports, "checks": r.checks}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
