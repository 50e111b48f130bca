"""The command line: ``segbundles <command>`` and the ``scripts/`` tools, which are thin forms of the same commands.

A command is a function, named lazily as ``"module:function"`` so only the module of the command that runs is
imported. Arguments are parsed with ``fire``; ``-h``/``--help`` is answered here, one line per command and flag, from
the functions' signatures and Google-style ``Args:`` docstrings, read from the source without importing the module
(help never loads MONAI or torch). Input errors print one message (no traceback) and exit with 2.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import re
import shutil
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

HELP_FLAGS = ("-h", "--help")
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


@dataclass(frozen=True)
class Command:
    """A command run lazily: ``target`` is ``"module:function"``; ``then`` (also ``"module:function"``, optional)
    turns its result into what is printed; ``quiet``: the result is not printed (the command prints its own)."""

    target: str
    then: str | None = None
    quiet: bool = False

    def load(self) -> Callable[..., Any]:
        fn = _resolve(self.target)
        if self.then is None and not self.quiet:
            return fn
        post = _resolve(self.then) if self.then else None

        def command(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs)
            return None if self.quiet else post(result) if post else result

        command.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
        command.__doc__, command.__name__ = fn.__doc__, fn.__name__
        return command


@dataclass(frozen=True)
class Group:
    """Sub-commands under one name, with a one-line ``summary`` and example command lines (without the program)."""

    summary: str
    commands: Mapping[str, Command | Group | Callable[..., Any]]
    examples: Sequence[str] = field(default_factory=tuple)


Target = Command | Group | Callable[..., Any]


def _resolve(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


# ---- the commands ------------------------------------------------------------------------------------------------

_CONVERTERS = "shared_components.data.converters"
_REPORT = "shared_components.cli:report_datalist"
PREPARE = Group(
    "Dataset (official layout, your own folders or a CSV) -> checked, folded datalist.",
    {
        "msd": Command(f"{_CONVERTERS}.msd:convert_msd", _REPORT),
        "lits": Command(f"{_CONVERTERS}.lits:convert_lits", _REPORT),
        "abdomenct1k": Command(f"{_CONVERTERS}.abdomenct1k:convert_abdomenct1k", _REPORT),
        "brats": Command(f"{_CONVERTERS}.brats:convert_brats", _REPORT),
        "csv": Command(f"{_CONVERTERS}.csv_table:convert_table", _REPORT),
        "folder": Command(f"{_CONVERTERS}.folders:convert_folder", _REPORT),
        "adam": Command(f"{_CONVERTERS}.adam:convert_adam", _REPORT),
        "lausanne": Command(f"{_CONVERTERS}.lausanne:convert_lausanne", _REPORT),
        "check": Command("shared_components.commands:check_datalist"),
        "fingerprint": Command("shared_components.commands:fingerprint"),
    },
    (
        "msd --src ../shared/data/Task04_Hippocampus --dst work/hippocampus",
        "msd --src ../shared/data/Task04_Hippocampus --dst work/hippocampus_eval --folds 1",
        "folder --src /data/amygdala --dst /data/amygdala --modality T1",
        "check work/hippocampus/datalist.json --level full",
    ),
)
BENCHMARK = Group(
    "Train and evaluate bundles under one data, split, seed and budget; rank them.",
    {
        "run": Command("shared_components.experiments.benchmark:run_benchmark"),
        "report": Command("shared_components.experiments.benchmark:report_benchmark"),
        "ensemble": Command("shared_components.experiments.benchmark_ensemble:ensemble_benchmark"),
        "pipeline": Command(
            "shared_components.experiments.pipeline_benchmark:benchmark_pipeline",
            "shared_components.experiments.pipeline_benchmark:format_result",
        ),
        "components": Command(
            "shared_components.evaluation.components:component_effect",
            "shared_components.evaluation.components:format_effect",
        ),
        "precision": Command(
            "shared_components.experiments.precision_benchmark:benchmark_precision",
            "shared_components.experiments.precision_benchmark:format_result",
        ),
    },
    (
        "run --bundles 'hippocampus_mri_*' --folds 0 --max_epochs 150 --time_budget 20",
        "report results/hippocampus_mri",
        "ensemble results/hippocampus_mri --members segresnet,attention_unet",
        "pipeline hippocampus_mri_unet --json work/pipeline/hippocampus_cpu.json",
        "components results/final_bf16/hippocampus_mri",
        "precision --bundles hippocampus_mri_segresnet,hippocampus_mri_unet --json_out work/precision.json",
    ),
)
NEW_BUNDLE = Group(
    "Create bundles from dataset and model specs; keep every bundle in sync with them.",
    {
        "create": Command("shared_components.commands:create_bundle"),
        "sync": Command("shared_components.commands:sync_bundles"),
        "check": Command("shared_components.commands:check_bundles"),
        "ship": Command("shared_components.commands:ship_weights"),
    },
    (
        "create spleen_ct segresnet",
        "sync",
        "check",
        "ship hippocampus_mri_segresnet results/hippocampus_mri/runs/hippocampus_mri_segresnet/fold_0",
    ),
)
_TUNE = "shared_components.experiments.tune"
TUNE = Group(
    "Optuna studies over a bundle's overrides (pruned on validation Dice, many workers on one database), ablations.",
    {
        "run": Command(f"{_TUNE}:run_study"),
        "best": Command(f"{_TUNE}:write_best"),
        "report": Command(f"{_TUNE}:write_report"),
        "ablate": Command("shared_components.experiments.ablation:ablate"),
    },
    (
        "run hippocampus_mri_unet --space space.yaml --trials 20 --study unet_tpe --storage sqlite:///tune.db",
        "best --study unet_tpe --storage sqlite:///tune.db --out tuned.yaml",
        "report --study unet_tpe --storage sqlite:///tune.db --eval_fold 1",
        "ablate hippocampus_mri_unet --seeds 0,1,2 --max_epochs 60",
    ),
)
SEGBUNDLES = Group(
    "MONAI segmentation bundles: prepare data, train, evaluate, compare and ship models.",
    {
        "demo": Command("shared_components.demo:run_demo"),
        "prepare": PREPARE,
        "synthetic": Command("shared_components.commands:synthetic"),
        "evaluate": Command("shared_components.experiments.evaluate_data:evaluate_on_data", quiet=True),
        "cv": Command("shared_components.experiments.crossval:cross_validate"),
        "ensemble": Command("shared_components.experiments.ensemble:ensemble", quiet=True),
        "benchmark": BENCHMARK,
        "tune": TUNE,
        "export": Command("shared_components.shipping.command:export"),
        "new-bundle": NEW_BUNDLE,
    },
    (
        "demo",
        "prepare msd --src ../shared/data/Task04_Hippocampus --dst work/hippocampus",
        "evaluate hippocampus_mri_unet --data ../shared/data/Task04_Hippocampus",
        "prepare --help",
    ),
)


def report_datalist(path: str | Path) -> str:
    """What a converter wrote, for the command line (and the aneurysm counts of a detection datalist)."""
    from shared_components.data.converters.base import report

    lines = [report(path)]
    if importlib.util.find_spec(f"{_CONVERTERS}.adam") is not None:
        from shared_components.data.converters.adam import aneurysm_summary

        lines.append(aneurysm_summary(path))
    return "\n".join(line for line in lines if line)


# ---- running -----------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """``segbundles``: every command of the collection (``segbundles --help`` lists them)."""
    run(SEGBUNDLES, "segbundles", argv)


def script(command: str, argv: Sequence[str] | None = None) -> None:
    """Run the ``segbundles`` command ``command`` as the script ``sys.argv[0]`` (``scripts/*.py``)."""
    run(SEGBUNDLES.commands[command], Path(sys.argv[0]).name, argv)


def run(commands: Target | Mapping[str, Target], name: str | None = None, argv: Sequence[str] | None = None) -> None:
    """Run a command (or pick one from a group by the first argument) with ``fire``; ``--help`` prints its help,
    input errors print one clear message (no traceback) and exit with 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    prog = name or Path(sys.argv[0]).name
    target: Any = Group("", commands) if isinstance(commands, Mapping) else commands
    while isinstance(target, Group) and args and args[0] in target.commands:
        prog, target, args = f"{prog} {args[0]}", target.commands[args[0]], args[1:]
    head = args[: args.index("--")] if "--" in args else args
    if any(a in HELP_FLAGS for a in head) or (isinstance(target, Group) and not args):
        try:
            print(help_text(target, prog))
        except BrokenPipeError:
            _quiet_stdout()
        return
    if isinstance(target, Group):
        choices = ", ".join(target.commands)
        print(
            f"error: unknown command {args[0]!r} for {prog}; choose one of {choices} ({prog} --help).", file=sys.stderr
        )
        sys.exit(2)
    fn = target.load() if isinstance(target, Command) else target
    _call(fn, _bool_flags(fn, args), prog)


def _call(fn: Callable[..., Any], args: list[str], prog: str) -> None:
    import fire

    from shared_components.data.errors import DataValidationError

    try:
        fire.Fire(fn, command=args, name=prog)
    except (DataValidationError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:
        _quiet_stdout()
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        sys.exit(130)


def _quiet_stdout() -> None:
    """Output went into a pipe that closed (``| head``): drop the rest instead of a traceback at exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _bool_flags(fn: Callable[..., Any], args: list[str]) -> list[str]:
    """``--flag true|false`` (and ``=``) for a boolean parameter as fire wants it: ``--flag`` / ``--noflag``."""
    names = {p.name for p in inspect.signature(fn).parameters.values() if isinstance(p.default, bool)}
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out += args[i:]
            break
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key.replace("-", "_") in names:
            if not eq and i + 1 < len(args) and args[i + 1].lower() in _TRUE | _FALSE:
                eq, value, i = "=", args[i + 1], i + 1
            if eq and value.lower() in _TRUE | _FALSE:
                arg = f"--{key}" if value.lower() in _TRUE else f"--no{key}"
        out.append(arg)
        i += 1
    return out


# ---- help --------------------------------------------------------------------------------------------------------


class Param(NamedTuple):
    name: str
    kind: str  # "arg" (required), "args" (*args), "option" (with a default), "flag" (boolean), "kwargs" (**kwargs)
    default: str = ""


class Spec(NamedTuple):
    params: list[Param]
    doc: str


def plain(text: str) -> str:
    """Docstring markup as plain text: ````x````, ``:func:`x``` and ```x``` become ``x``."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    return re.sub(r"``([^`]+)``|`([^`]+)`", lambda m: m.group(1) or m.group(2), text)


def parse_doc(doc: str | None) -> tuple[str, str, dict[str, str]]:
    """``(summary, description, {argument: description})`` of a Google-style docstring, as plain text; an entry
    ``a, b: text`` documents both."""
    paragraphs: list[str] = []
    args: dict[str, str] = {}
    section, current, base = None, [], None
    for line in inspect.cleandoc(doc or "").splitlines() + [""]:
        stripped, indent = line.strip(), len(line) - len(line.lstrip())
        header = re.fullmatch(r"(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?|Notes?):", stripped)
        if header and indent == 0:
            section, current, base = header.group(1), [], None
            continue
        if section in ("Args", "Arguments", "Parameters") and (indent > 0 or not stripped):
            entry = re.fullmatch(r"(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*)\s*(?:\([^)]*\))?:\s*(.*)", stripped)
            if entry and (base is None or indent <= base):
                base = indent
                current = [n.strip().lstrip("*") for n in entry.group(1).split(",")]
                for n in current:
                    args[n] = entry.group(2)
            elif stripped:
                for n in current:
                    args[n] += " " + stripped
            continue
        if section is not None and indent > 0:
            continue  # other sections are not shown
        section = None
        if not stripped:
            paragraphs.append("")
        elif paragraphs and paragraphs[-1]:
            paragraphs[-1] += " " + stripped
        else:
            paragraphs.append(stripped)
    paragraphs = [plain(p) for p in paragraphs if p]
    summary = paragraphs[0] if paragraphs else ""
    return summary, "\n".join(paragraphs[1:]), {k: plain(v) for k, v in args.items()}


def _default_text(value: Any) -> str:
    if isinstance(value, str):
        return value if value and " " not in value else repr(value)
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def spec_of(target: Command | Callable[..., Any]) -> Spec:
    """Parameters and docstring of a command, from its source when it is a plain ``def`` (no import), else from
    the imported function."""
    if isinstance(target, Command):
        found = _spec_from_source(target.target)
        if found is not None:
            return found
        target = _resolve(target.target)
    params = []
    for p in inspect.signature(target).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            params.append(Param(p.name, "args" if p.kind is p.VAR_POSITIONAL else "kwargs"))
        elif p.default is p.empty:
            params.append(Param(p.name, "arg"))
        else:
            params.append(Param(p.name, "flag" if isinstance(p.default, bool) else "option", _default_text(p.default)))
    return Spec(params, inspect.getdoc(target) or "")


def _spec_from_source(target: str) -> Spec | None:
    module, _, attr = target.partition(":")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    node = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == attr), None)
    if node is None:
        return None
    constants = {  # module-level NAME = literal, for defaults that name one
        t.id: n.value for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
    }
    a = node.args
    positional = a.posonlyargs + a.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    params = [_param(p.arg, d, constants) for p, d in zip(positional, defaults, strict=True)]
    if a.vararg:
        params.append(Param(a.vararg.arg, "args"))
    params += [_param(p.arg, d, constants) for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)]
    if a.kwarg:
        params.append(Param(a.kwarg.arg, "kwargs"))
    return Spec(params, ast.get_docstring(node) or "")


def _param(name: str, default: ast.expr | None, constants: dict[str, ast.expr]) -> Param:
    if default is None:
        return Param(name, "arg")
    if isinstance(default, ast.Name) and default.id in constants:
        default = constants[default.id]
    try:
        value = ast.literal_eval(default)
    except (ValueError, TypeError, SyntaxError):  # not a literal: show the expression
        return Param(name, "option", ast.unparse(default))
    return Param(name, "flag" if isinstance(value, bool) else "option", _default_text(value))


def summary_of(target: Target) -> str:
    """The one-line description of a command or group."""
    if isinstance(target, Group):
        return target.summary
    return parse_doc(spec_of(target).doc)[0]


def first_sentence(text: str) -> str:
    """``text`` up to the end of its first sentence."""
    return re.split(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.!?])\s+", text.strip(), maxsplit=1)[0]


def terminal_width() -> int:
    return min(shutil.get_terminal_size((100, 20)).columns, 120)


def columns(rows: Sequence[tuple[str, str]]) -> str:
    """Two columns, the second wrapped to the terminal with a hanging indent."""
    return "\n".join(_table(rows, terminal_width()))


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, max(width, 30), break_on_hyphens=False, break_long_words=False)


def _table(rows: Sequence[tuple[str, str]], width: int) -> list[str]:
    left = min(max((len(k) for k, _ in rows), default=0), 30)
    out = []
    for key, text in rows:
        indent = " " * (left + 4)
        first = f"  {key:<{left}}  " if len(key) <= left else f"  {key}\n{indent}"
        wrapped = _wrap(text, width - len(indent)) or [""]
        out.append(first + wrapped[0])
        out += [indent + w for w in wrapped[1:]]
    return out


def help_text(target: Target, prog: str) -> str:
    """The help of a command (usage, description, one line per argument and flag) or of a group (its commands)."""
    width = terminal_width()
    if isinstance(target, Group):
        lines = [f"usage: {prog} COMMAND [ARGS]", ""]
        if target.summary:
            lines += _wrap(target.summary, width) + [""]
        lines += ["commands:"] + _table([(n, summary_of(c)) for n, c in target.commands.items()], width)
        if target.examples:
            lines += ["", "examples:"] + [f"  {prog} {e}" for e in target.examples]
        return "\n".join(lines + ["", f"'{prog} COMMAND --help' shows a command's arguments and flags."])
    spec = spec_of(target)
    summary, description, docs = parse_doc(spec.doc)
    required = [p for p in spec.params if p.kind in ("arg", "args")]
    options = [p for p in spec.params if p.kind not in ("arg", "args")]
    usage = [prog] + [p.name.upper() + ("..." if p.kind == "args" else "") for p in required]
    lines = _wrap("usage: " + " ".join(usage + (["[FLAGS]"] if options else [])), width) + [""]
    for paragraph in [summary, *description.splitlines()]:
        lines += _wrap(paragraph, width) + [""]
    if required:
        rows = [
            (p.name.upper() + ("..." if p.kind == "args" else f" (--{p.name})"), docs.get(p.name, "")) for p in required
        ]
        lines += ["arguments:"] + _table(rows, width) + [""]
    if options:
        rows = [_option_row(p, docs.get(p.name, "")) for p in options]
        lines += ["flags (with their defaults):"] + _table(rows, width)
    return "\n".join(lines).rstrip()


def _option_row(p: Param, text: str) -> tuple[str, str]:
    """``(flag, description)``: ``--name DEFAULT``, ``--name``/``--noname`` for booleans, ``--KEY VALUE``."""
    if p.kind == "kwargs":
        return "--KEY VALUE", text or "further options, passed on as keyword arguments"
    if p.kind == "flag":
        on = p.default == "True"
        return (
            (f"--{p.name} / --no{p.name}", f"{text.rstrip('.')}; on by default.".lstrip("; "))
            if on
            else (f"--{p.name}", text)
        )
    return f"--{p.name} " + (p.name.upper() if p.default in ("None", "") else p.default), text


if __name__ == "__main__":
    main()
