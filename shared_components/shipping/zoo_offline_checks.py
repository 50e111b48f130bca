"""The MONAI Model Zoo's offline bundle checks, as a standalone script (stdlib, torch and monai only).

``isolation.verify_export`` copies this file next to the import guard and runs it in a subprocess that cannot
import ``shared_components``, so passing it proves an exported bundle stands on its own:

    python zoo_offline_checks.py <bundle_dir> --report <report.json> --schemas <schema.json> [...] [--export ts onnx]

It mirrors what the zoo's ``ci/verify_bundle.py -m full`` checks with the same ``monai.bundle`` functions (large
files downloaded first, necessary and preferred files, version/changelog, metadata against each schema, the
properties of each app in ``supported_apps``, network input/output, TorchScript export and load), adds the
key-naming rules of the zoo's contributing guide and the file rules of its pre-commit hooks, and compares
``models/model.ts`` and ``models/model.onnx`` (onnxruntime) with the eager network. Writes one JSON report.
Train and evaluate properties need data, so they are proved by the smoke run instead (as in the zoo's own CI).
``shared_components.shipping.zoo_ci`` runs the zoo's real ``verify_bundle.py`` when a checkout of it is at hand.

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

# the zoo's pre-commit `check-added-large-files --maxkb=1024`: bigger files go to large_files.yml
ZOO_FILE_LIMIT_KB = 1024
NECESSARY = ("configs/metadata.json", "LICENSE")
# networks MONAI cannot script (the zoo lists such bundles in ci/bundle_custom_data.py's
# exclude_verify_torchscript_list); every other network must pass the zoo's ckpt_export (export.NOT_SCRIPTABLE)
NOT_SCRIPTABLE = ("SwinUNETR",)
# DynUNet's deep-supervision heads, which an inference network built without them ignores (runtime.HEAD_MODULES)
HEAD_MODULES = ("deep_supervision_heads", "super_head")
# what an app in `supported_apps` needs of the inference config and the metadata, as the zoo's check_properties
# reads it from <zoo>/<app>/**/bundle_properties.py (InferProperties, MetaProperties); MONAI Label's BundleInferTask
# reads bundle_root, device, network_def, preprocessing, postprocessing, inferer and the metadata's version, input
# spatial shape and output channel_def (its labels)
APP_PROPERTIES: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "monai-label": {
        "InferProperties": {
            key: {"description": f"MONAI Label reads `{key}` of the inference config", "required": True, "id": key}
            for key in ("bundle_root", "device", "network_def", "preprocessing", "postprocessing", "inferer")
        },
        "MetaProperties": {
            "version": {"description": "bundle version", "required": True, "id": "_meta_#version"},
            "spatial_shape": {
                "description": "input spatial shape",
                "required": True,
                "id": "_meta_#network_data_format#inputs#image#spatial_shape",
            },
            "channel_def": {
                "description": "output channels: the labels MONAI Label serves",
                "required": True,
                "id": "_meta_#network_data_format#outputs#pred#channel_def",
            },
        },
    }
}
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
    missing, unexpected = net.load_state_dict(state, strict=False)
    if "optional_deep_supervision_heads" in str(parser.get("network", "")):
        unexpected = [k for k in unexpected if not set(k.split(".")) & set(HEAD_MODULES)]
    if missing or unexpected:
        raise RuntimeError(f"models/model.pt does not fit network_def: missing {missing}, unexpected {unexpected}")
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
        text = "".join(traceback.format_exception_only(type(e), e)).strip()
        head = text.splitlines()[0][:300] if text else type(e).__name__  # the error itself, before any dumped graph
        info["detail"] = text if len(text) <= 600 else f"{head} [...] {text[-300:]}"
        if os.path.exists(path):
            os.remove(path)


def run_onnx(path: str, x: Any) -> Any:
    import onnxruntime

    sess = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def network_class(config: str) -> str:
    """The class name of ``network_def`` in an inference config (built on the CPU)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config)
    parser["bundle_root"] = os.path.dirname(os.path.dirname(os.path.abspath(config)))
    return type(parser.get_parsed_content("network_def")).__name__


def large_file_paths(bundle: str) -> list[str]:
    """The ``path`` of every entry of the bundle's ``large_files.yml`` (or .yaml, .json), as the zoo reads it."""
    for ext in ("yml", "yaml", "json"):
        path = os.path.join(bundle, f"large_files.{ext}")
        if os.path.isfile(path):
            from monai.bundle import ConfigParser

            return [str(e["path"]) for e in ConfigParser.load_config_file(path).get("large_files", [])]
    return []


def bundle_files(bundle: str) -> list[str]:
    """Every file a zoo pull request of the bundle would add (relative paths; no caches, no eval outputs)."""
    out = []
    for root, dirs, names in os.walk(bundle):
        dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", "eval", ".git"))
        out += [os.path.relpath(os.path.join(root, n), bundle) for n in sorted(names)]
    return out


def precommit_rules(bundle: str) -> str:
    """The file rules of the zoo's ``.pre-commit-config.yaml`` (end-of-file-fixer, trailing-whitespace,
    mixed-line-ending, pretty-format-json --indent=4 --no-sort-keys, check-yaml, check-executables-have-shebangs,
    check-docstring-first), checked rather than fixed."""
    import ast

    problems = []
    for rel in bundle_files(bundle):
        path = os.path.join(bundle, rel)
        with open(path, "rb") as f:
            data = f.read()
        if os.access(path, os.X_OK) and not data.startswith(b"#!"):
            problems.append(f"{rel}: executable without a shebang")
        if b"\0" in data or rel.endswith((".pt", ".ts", ".onnx")):
            continue  # binary: the text rules do not apply
        text = data.decode("utf-8", errors="replace")
        if data and (not data.endswith(b"\n") or data.endswith((b"\n\n", b"\n\r\n"))):
            problems.append(f"{rel}: must end with exactly one newline")
        crlf = data.count(b"\r\n")
        if 0 < crlf < data.count(b"\n"):
            problems.append(f"{rel}: mixed line endings")
        lines = text.split("\n")
        trailing = [i + 1 for i, line in enumerate(lines) if line.removesuffix("\r") != line.rstrip()]
        if trailing:
            problems.append(f"{rel}: trailing whitespace on lines {trailing[:5]}")
        if rel.endswith(".json"):
            try:
                if json.dumps(json.loads(text), indent=4) + "\n" != text:
                    problems.append(f"{rel}: not formatted as pretty-format-json --indent=4 --no-sort-keys")
            except ValueError as e:
                problems.append(f"{rel}: invalid JSON ({e})")
        elif rel.endswith((".yml", ".yaml")):
            import yaml

            try:
                yaml.safe_load(text)
            except yaml.YAMLError as e:
                problems.append(f"{rel}: invalid YAML ({str(e).splitlines()[0]})")
        elif rel.endswith(".py"):
            body = ast.parse(text).body
            strings = [i for i, n in enumerate(body) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)]
            if any(i > 0 and isinstance(body[i].value.value, str) for i in strings):
                problems.append(f"{rel}: a module docstring after code (check-docstring-first)")
    if problems:
        raise ValueError(f"{len(problems)} file(s) break the zoo's pre-commit hooks: {problems[:10]}")
    return "end of file, whitespace, line endings, JSON/YAML format, shebangs, docstring first"


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
        big = [
            f"{rel} ({os.path.getsize(os.path.join(bundle, rel)) / 2**10:.0f} KB)"
            for rel in bundle_files(bundle)
            if os.path.getsize(os.path.join(bundle, rel)) > ZOO_FILE_LIMIT_KB * 2**10 and rel not in large
        ]
        if big:
            raise ValueError(
                f"the zoo's pre-commit refuses files over {ZOO_FILE_LIMIT_KB} KB: {big}; export with --large_files "
                "URL_BASE to list them in large_files.yml"
            )
        return f"every file under {ZOO_FILE_LIMIT_KB} KB" + (f" ({len(large)} in large_files.yml)" if large else "")

    def download() -> str:
        from monai.bundle import download_large_files

        with contextlib.redirect_stderr(io.StringIO()):
            download_large_files(bundle_path=bundle)
        return f"downloaded {sorted(large)} (hashes checked)"

    def app_properties(app: str) -> Callable[[], str]:
        def check() -> str:
            props = APP_PROPERTIES[app]
            w = create_workflow(
                workflow_type="inference",
                config_file=infer,
                meta_file=meta,
                logging_file=os.path.join(bundle, "configs", "logging.conf"),
                bundle_root=bundle,
            )
            w.properties = {**props["MetaProperties"], **props["InferProperties"]}
            missing = w.check_properties()
            if missing:
                raise ValueError(f"{app} needs {missing}")
            return f"{len(w.properties)} {app} properties present"

        return check

    def unknown_app(app: str) -> Callable[[], str]:
        def check() -> str:
            raise ValueError(
                f"no properties known for {app!r}: the zoo checks nothing for it ({sorted(APP_PROPERTIES)})"
            )

        return check

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

    large = large_file_paths(bundle)
    missing_large = [f for f in large if not os.path.isfile(os.path.join(bundle, f))]
    if missing_large:
        r.run("download large files", download)  # the zoo downloads them before checking anything
    exports: dict[str, dict[str, Any]] = {}
    if args.export and infer:
        try:
            exports = export_models(bundle, infer, meta, args.export)
        except Exception as e:  # noqa: BLE001 - e.g. weights that do not fit network_def: reported below
            detail = "".join(traceback.format_exception_only(type(e), e)).strip()[-600:]
            exports = {k: {"ok": False, "file": f"models/model.{k}", "detail": detail} for k in args.export}
    r.run("files", files)
    r.run("file sizes", sizes, level="warning")
    r.run("pre-commit rules", lambda: precommit_rules(bundle))
    r.run("version/changelog", version)
    r.run("inference keys", keys(infer, INFER_KEYS))
    if train is not None:
        r.run("train keys", keys(train, TRAIN_KEYS))
    for schema in args.schemas:
        r.run(f"verify_metadata {os.path.basename(schema)}", metadata(schema))
    r.run("inference properties", properties)
    with open(meta) as f:
        apps = json.load(f).get("supported_apps") or {}
    for app in apps:
        r.run(f"{app} properties", app_properties(app) if app in APP_PROPERTIES else unknown_app(app))
    with open(meta) as f:
        outputs = json.load(f).get("network_data_format", {}).get("outputs", {}).values()
    if any(o.get("type") == "object" for o in outputs):  # a detector: the zoo skips it for its own detection bundle
        r.run("verify_net_in_out", lambda: "not applicable: the output is an object (exclude_verify_shape_list)")
    else:
        r.run("verify_net_in_out", net_in_out)
    ts_path = os.path.join(bundle, "models", "model.ts")
    ts_method = exports.get("ts", {}).get("method", "")
    network = network_class(infer) if infer else ""
    # only a network MONAI cannot script may fail: the zoo then lists the bundle in exclude_verify_torchscript_list
    level = "warning" if network in NOT_SCRIPTABLE else "error"
    if ts_method == "scripted":
        r.run("ckpt_export", lambda: "ckpt_export + torch.jit.load (scripted by --export)", level=level)
    elif ts_method.startswith("traced"):

        def not_scriptable() -> str:
            error = exports["ts"].get("script_error", "")
            raise RuntimeError(f"{network} does not script ({error}); the zoo must exclude it from verify_torchscript")

        r.run("ckpt_export", not_scriptable, level=level)
    else:
        r.run("ckpt_export", torchscript, level=level)
    if os.path.isfile(ts_path):
        r.run("models/model.ts vs eager", shipped_ts)
    if os.path.isfile(os.path.join(bundle, "models", "model.onnx")):
        r.run("models/model.onnx vs eager", shipped_onnx)
    with open(args.report, "w") as f:
        json.dump({"bundle": bundle, "exports": exports, "checks": r.checks}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
