"""The command line of a bundle run, checked before anything runs: unknown overrides are refused with the closest
valid ids, ``--help`` lists the bundle's overrides, and a failed run ends with a short summary of its root cause.

Every config calls :func:`check_invocation` as its first ``initialize`` expression. It acts only when the MONAI
bundle CLI started this process (``python -m monai.bundle run ...``, also under ``torchrun -m monai.bundle``); in a
process that runs a bundle from Python (MONAI Label's server, ``ConfigWorkflow`` in a script or a test) it returns
at once, since the command line there is not the bundle's.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import os
import re
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from monai.bundle import ConfigParser
from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

from shared_components.data.errors import DataValidationError

# the parameters of ``monai.bundle.run`` in their positional order (fire fills them from bare words)
RUN_ARGS = ("run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file")
# what ``run`` passes on to ``create_workflow`` and ``ConfigWorkflow`` besides the overrides
WORKFLOW_ARGS = ("workflow_name", "workflow_type", "properties_path")
HELP_KEYS = ("help", "h")
RUN_IDS = ("run", "training", "evaluating")
# top-level ids that are workflow steps, not settings
STEPS = ("imports", "initialize", "finalize", *RUN_IDS)
# first characters of the line where a config's standard (template) part starts (shared_components.bundle.layout)
MARKER = "# ---- standard "
USAGE_EXIT = 2
_KEY_LINE = re.compile(r"^([A-Za-z_][\w#:.-]*)\s*:(\s|$)")
_MONAI_WRAPPERS = ("Failed to evaluate ", "Failed to instantiate component ")
_installed: dict[str, Any] = {}


# ---- the command line -------------------------------------------------------------------------------------------


def cli_args() -> list[str] | None:
    """The words after ``run`` when ``python -m monai.bundle run`` started this process (``torchrun -m
    monai.bundle`` starts its workers the same way), else ``None``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if getattr(spec, "name", None) != "monai.bundle.__main__" or len(sys.argv) < 2 or sys.argv[1] != "run":
        return None
    return sys.argv[2:]


def _is_flag(word: str) -> bool:
    return word.startswith("--") or re.match(r"^-[a-zA-Z]", word) is not None


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_run_args(words: Sequence[str]) -> dict[str, Any]:
    """The keyword arguments fire gives ``monai.bundle.run`` for the words after ``run``: ``--key value``,
    ``--key=value``, a bare ``--flag`` (True; ``--noflag`` is ``flag=False``), ``-`` in keys read as ``_``, and bare
    words filling ``run_id``, ``init_id``, ... in order. Values are Python literals where they parse as one."""
    kwargs: dict[str, Any] = {}
    positional: list[Any] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("--", "-"):  # fire's own flags, or the next command, follow
            break
        if _is_flag(word):
            key, equals, text = word.lstrip("-").partition("=")
            key = key.replace("-", "_")
            if equals:
                value = _value(text)
            elif i + 1 == len(words) or _is_flag(words[i + 1]):
                key, value = (key[2:], False) if key.startswith("no") and key not in RUN_ARGS else (key, True)
            else:
                i += 1
                value = _value(words[i])
            kwargs[key] = value
        else:
            positional.append(_value(word))
        i += 1
    for name in RUN_ARGS:
        if positional and name not in kwargs:
            kwargs[name] = positional.pop(0)
    return kwargs


def with_args_file(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(effective arguments, those read from --args_file)``: MONAI reads ``args_file`` first and lets the command
    line override it."""
    from_file: dict[str, Any] = {}
    if isinstance(kwargs.get("args_file"), str):
        from_file = dict(ConfigParser.load_config_file(kwargs["args_file"]) or {})
    return {**from_file, **{k: v for k, v in kwargs.items() if v is not None}}, from_file


def config_files(value: Any) -> list[str]:
    """``--config_file`` as a list of paths (one path, a list, or a list written as a string)."""
    if isinstance(value, str) and value.strip().startswith("["):
        value = _value(value)
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


def load_config(files: Sequence[str], meta_file: Any = None) -> ConfigParser:
    """The merged configs as ``ConfigWorkflow`` reads them (with the metadata under ``_meta_`` when it exists)."""
    parser = ConfigParser()
    parser.read_config(f=list(files))
    meta = config_files(meta_file) if meta_file else [str(Path(files[0]).parent / "metadata.json")]
    if all(os.path.isfile(m) for m in meta):
        parser.read_meta(f=meta)
    return parser


# ---- checking overrides -----------------------------------------------------------------------------------------


def _children(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [str(k) for k in node]
    return [str(i) for i in range(len(node))] if isinstance(node, list) else []


def config_ids(node: Any, prefix: str = "") -> Iterator[str]:
    """Every id of a config, nested ones joined with ``#`` (keys that are not strings, e.g. a ``label_map``'s, as
    text)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield f"{prefix}{key}"
        yield from config_ids(child, f"{prefix}{key}#")


def tracking_keys(tracking: Any) -> set[str]:
    """Top-level ids that ``--tracking`` adds to the config (``tracking_uri``, ``experiment_name``, ...)."""
    if not tracking:
        return set()
    if isinstance(tracking, str) and tracking in DEFAULT_EXP_MGMT_SETTINGS:
        settings = DEFAULT_EXP_MGMT_SETTINGS[tracking]
    elif isinstance(tracking, dict):
        settings = tracking
    elif isinstance(tracking, str) and os.path.isfile(tracking):
        settings = ConfigParser.load_config_files(tracking)
    else:
        return set()
    return set(settings.get("configs", {}))


def _suggestions(key: str, parser: ConfigParser, extra: Sequence[str], cutoff: float = 0.6) -> list[str]:
    """The closest valid ids: entries of an existing parent (by name), else top-level ids first, then all ids as
    deep."""
    parent, _, leaf = key.rpartition("#")
    if parent and parent in parser:
        close = difflib.get_close_matches(leaf, _children(parser[parent]), n=3, cutoff=cutoff)
        return [f"{parent}#{c}" for c in close]
    deep = [i for i in config_ids(parser.get()) if i.count("#") == key.count("#")]
    for pool in [deep] if parent else [[*_children(parser.get()), *extra], deep]:
        close = difflib.get_close_matches(key, pool, n=3, cutoff=cutoff)
        if close:
            return close
    return []


def unknown_overrides(parser: ConfigParser, keys: Sequence[str], allowed: Sequence[str] = ()) -> list[str]:
    """One message per override key that the merged config cannot take.

    A key is valid when it is an id of the config (``max_epochs``, ``network_def#channels``, ``train#handlers#0``;
    ``::`` works as ``#``), one of ``allowed`` (the arguments MONAI itself takes), or a new entry of a dict that
    exists (``loss_args#gamma``) unless it is a near-copy of an entry there (``network_def#chanels``: a typo). New
    top-level ids, and entries below anything but a dict, are refused.
    """
    messages = []
    for raw in keys:
        key = raw.replace("::", "#")
        if key in allowed or key in parser:
            continue
        parent = key.rpartition("#")[0]
        node = parser[parent] if parent and parent in parser else None
        typo = _suggestions(key, parser, allowed, cutoff=0.85) if isinstance(node, dict) else []
        if isinstance(node, dict) and not typo:
            continue
        close = typo or ([] if isinstance(node, list) else _suggestions(key, parser, allowed))
        if isinstance(node, list):
            hint = f"{parent} is a list of {len(node)} (indices 0-{len(node) - 1})"
        elif key in tracking_keys("mlflow"):
            hint = "a setting of experiment tracking: add --tracking mlflow"
        elif close:
            hint = "did you mean " + " or ".join(f"--{c}" for c in close) + "?"
        elif node is not None:
            hint = f"{parent} is not a dict, so it takes no new entries"
        else:
            hint = "no such id in the configs (`--help` lists the bundle's overrides)"
        messages.append(f"unknown override --{raw}: {hint}")
    return messages


# ---- --help -----------------------------------------------------------------------------------------------------


def _show(value: Any, width: int = 64) -> str:
    def text(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if v is None:
            return "null"
        if isinstance(v, list | tuple):
            return "[" + ", ".join(text(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {text(x)}" for k, x in v.items()) + "}"
        return str(v)

    out = " ".join(text(value).split())
    return out if len(out) <= width else out[: width - 3] + "..."


def _is_setting(key: str, value: Any) -> bool:
    """A plain value worth overriding, not a component (dict, list of dicts, object-building expression)."""
    if "#" in key or "::" in key or key in STEPS:
        return False
    if isinstance(value, dict):  # a dict of plain settings (preprocessing_args), not a component
        return "_target_" not in value and all(not isinstance(v, dict) and _is_setting(k, v) for k, v in value.items())
    if isinstance(value, list):
        return all(not isinstance(v, dict | list) and not str(v).startswith(("$", "@")) for v in value)
    if isinstance(value, str):
        return not value.startswith("@") and not (value.startswith("$") and "(" in value)
    return True


def _notes(text: str) -> dict[str, tuple[bool, str, str]]:
    """Per top-level key of a YAML config: (above the marker line, section heading, one-line meaning). The meaning
    is the key's end-of-line comment, else a one- or two-line comment right above it; a lone comment of up to four
    words above a key starts a section (``# data``)."""
    notes: dict[str, tuple[bool, str, str]] = {}
    header, section, block, seen_key = MARKER in text, "", [], False
    for line in text.splitlines():
        if line.startswith(MARKER):
            header, section, block = False, "", []
        elif line.startswith("# ----"):
            continue
        elif line.startswith("#"):
            block.append(line.lstrip("#").strip())
        elif match := _KEY_LINE.match(line):
            meaning = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            if len(block) == 1 and len(block[0].split()) <= 4:
                section = block[0]
            elif seen_key and 0 < len(block) <= 2 and not meaning:
                meaning = " ".join(block)
            notes[match.group(1)] = (header, section, meaning)
            block, seen_key = [], True
        elif line.strip():
            block = []
    return notes


def describe_overrides(files: Sequence[str]) -> str:
    """The ``--help`` text: each config's overrides with their current (unparsed) values and meanings, the run ids
    and common commands."""
    configs = [dict(ConfigParser.load_config_file(f) or {}) for f in files]
    owner = {key: i for i, config in enumerate(configs) for key in config}
    rows: list[tuple[str, str, str, str]] = []  # (group, key, value, meaning)
    for i, (path, config) in enumerate(zip(files, configs, strict=True)):
        text = Path(path).read_text() if path.endswith((".yaml", ".yml")) else ""
        notes = _notes(text)
        for key, value in config.items():
            header, section, meaning = notes.get(key, (False, "", ""))
            if owner[key] != i or key in STEPS or not (header or _is_setting(key, value)):
                continue
            part = "header" if header else "workflow" if MARKER in text else ""
            group = f"{path}" + (f" ({part})" if part else "") + (f": {section}" if section else "")
            if isinstance(value, dict) and value:  # a dict of settings: one row per entry, as overridden
                rows += [
                    (group, f"{key}#{k}", _show(v), meaning if j == 0 else "") for j, (k, v) in enumerate(value.items())
                ]
            else:
                rows.append((group, key, _show(value), meaning))
    width = min(max((len(k) for _, k, _, _ in rows), default=10) + 1, 34)
    merged = {k: v for config in configs for k, v in config.items()}
    run_ids = [r for r in RUN_IDS if r in merged]
    folder, ext = str(Path(files[0]).parent), Path(files[0]).suffix
    cfg = {name: f"{folder}/{name}{ext}" for name in ("train", "evaluate", "inference", "multi_gpu_train")}
    lines = [f"Overrides of {', '.join(files)} (--key value; current values, unparsed):"]
    group = None
    for g, key, value, meaning in rows:
        if g != group:
            lines.append(f"\n  {g}")
            group = g
        lines.append(f"    --{key:<{width}} {value}" + (f"  # {meaning}" if meaning else ""))
    lines += [
        "",
        "Any id of the merged configs takes an override, nested ones with '#' (--network_def#channels",
        "'[16,32,64]', --augmentation_args#num_samples 2); ids that do not exist are refused.",
        f"Run ids here: {', '.join(run_ids)} (`python -m monai.bundle run <id> ...`; `run` is the default).",
        "MONAI's own arguments: run_id (the first bare word), " + ", ".join(RUN_ARGS[1:4]) + ",",
        "  " + ", ".join(RUN_ARGS[4:]) + " (`python -m monai.bundle run -- --help`).",
        "Common commands (from the bundle folder):",
        f"  python -m monai.bundle run training --config_file {cfg['train']} --fold 1 --max_epochs 50",
        f"  python -m monai.bundle run evaluating --config_file \"['{cfg['train']}','{cfg['evaluate']}']\"",
        f"  python -m monai.bundle run evaluating --config_file {cfg['inference']} --input_data DIR --output_dir OUT",
        "  torchrun --nproc_per_node=2 -m monai.bundle run training \\",
        f"    --config_file \"['{cfg['train']}','{cfg['multi_gpu_train']}']\"",
    ]
    return "\n".join(lines)


# ---- short errors -----------------------------------------------------------------------------------------------


def _is_wrapper(error: BaseException) -> bool:
    chained = error.__cause__ or error.__context__
    return isinstance(error, RuntimeError) and str(error).startswith(_MONAI_WRAPPERS) and chained is not None


def _config_item(wrapper: BaseException) -> str:
    """What a MONAI wrapper was doing, on one line: ``instantiating component ...`` or ``evaluating: $...`` (the
    expression with its ``@`` references)."""
    message = str(wrapper)
    if message.startswith("Failed to instantiate "):
        return "instantiating " + " ".join(message[len("Failed to instantiate ") :].split())
    text = message.split(":", 1)[1].strip() if ":" in message else message
    with contextlib.suppress(ValueError, SyntaxError):
        text = str(ast.literal_eval(text))  # pformat of the expression string
    text = re.sub(r"__local_refs\['([^']*)'\]", lambda m: "@" + m.group(1).replace("::", "#"), text)
    return "evaluating: " + " ".join(text.split())


def root_cause(error: BaseException) -> tuple[BaseException, str]:
    """The first exception below MONAI's ``Failed to evaluate``/``Failed to instantiate`` wrappers, and the
    config item the innermost wrapper names (``""`` without a wrapper)."""
    item, seen = "", set()
    while _is_wrapper(error) and id(error) not in seen:
        seen.add(id(error))
        item = _config_item(error)
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return error, item


def _missing_folder(files: Sequence[str]) -> str | None:
    """The outermost missing folder holding every one of ``files`` (a wrong ``--dataset_dir``), if there is one."""
    paths = [os.path.abspath(f) for f in files if f and not os.path.exists(f)]
    if not paths:
        return None
    folder = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    if os.path.exists(folder):
        return None
    while not os.path.exists(os.path.dirname(folder)):
        folder = os.path.dirname(folder)
    return folder


def summary(error: BaseException, max_problems: int = 5) -> str:
    """The last lines a failed run prints: the config item that failed, where the root cause was raised, and its
    message last (a data error's first problems, each naming its file and fix, and a missing data folder)."""
    cause, item = root_cause(error)
    if isinstance(cause, DataValidationError):
        head, problems = str(cause).splitlines()[0], cause.problems
        lines = [f"  {i + 1}. {p}" for i, p in enumerate(problems[:max_problems])]
        if len(problems) > max_problems:
            lines.append(f"  ... and {len(problems) - max_problems} more (all listed in the traceback above)")
        folder = _missing_folder([p.file for p in problems])
        if folder:
            lines.append(f"  the folder {folder} does not exist: check --dataset_dir / --datalist")
        message = [head, *lines]
    else:
        text = str(cause).strip().splitlines() or [""]
        message = [line[:300] for line in text[:8]] + (["  ..."] if len(text) > 8 else [])
    out = ["", "=" * 100, "run failed" + (f" while {item[:200]}" if item else ":")]
    frames = traceback.extract_tb(cause.__traceback__)
    if frames:
        out.append(f"raised at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name} (traceback above)")
    return "\n".join([*out, f"{type(cause).__name__}: {message[0]}", *message[1:]])


def _excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    """Full traceback first (the previous hook), then the short summary as the last lines."""
    _installed["previous"](kind, error, tb)
    if not isinstance(error, Exception):  # KeyboardInterrupt: Python keeps its exit status
        return
    with contextlib.suppress(Exception):  # the summary must never hide the traceback printed above
        print(summary(error), file=sys.stderr, flush=True)


def install_excepthook() -> None:
    """Make an uncaught error end with :func:`summary` (once per process; exit statuses are Python's)."""
    if "previous" not in _installed:
        _installed["previous"] = sys.excepthook
        sys.excepthook = _excepthook


# ---- the initialize expression ----------------------------------------------------------------------------------


def check_invocation(words: Sequence[str] | None = None) -> None:
    """First ``initialize`` expression of every bundle config: under the MONAI bundle CLI, install the short-error
    hook, print the bundle's overrides and exit 0 for ``--help``/``-h``, and exit 2 naming the closest valid ids when
    an override is unknown. Returns at once when the bundle runs from Python (MONAI Label, ``ConfigWorkflow``).
    ``words`` (the words after ``run``, relative paths from the working directory) checks a given command line
    instead, without the hook."""
    if words is None:
        words = cli_args()
        if words is None:
            return
        install_excepthook()
    given = parse_run_args(words)
    effective, from_file = with_args_file(given)
    if effective.get("config_file") is None:
        return
    files = config_files(effective["config_file"])
    rank0 = os.environ.get("RANK", "0") == "0"
    if any(k in given for k in HELP_KEYS):
        if rank0:
            print(describe_overrides(files), flush=True)
        raise SystemExit(0)
    parser = load_config(files, effective.get("meta_file"))
    allowed = [*RUN_ARGS, *WORKFLOW_ARGS, *tracking_keys(effective.get("tracking"))]
    keys = [k for k in {**from_file, **given} if k not in allowed]
    messages = unknown_overrides(parser, keys, allowed)
    if messages:
        if rank0:
            source = f" (in {effective['args_file']} or on the command line)" if from_file else ""
            print("\n".join(f"error: {m}" for m in messages) + source, file=sys.stderr, flush=True)
            print(f"Nothing ran. `--help` lists the overrides of {', '.join(files)}.", file=sys.stderr, flush=True)
        raise SystemExit(USAGE_EXIT)
