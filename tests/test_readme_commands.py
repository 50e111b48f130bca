"""The README's commands, as written: every ``segbundles``/``scripts/*.py`` command names a command that exists and
only flags it takes, every bundle command only overrides its bundle has, every file it reads ships with the
repository. (The demo, the bundle commands and the tools themselves run in their own tests.)"""

from __future__ import annotations

import inspect
import re
import shlex
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from shared_components import cli
from shared_components.paths import REPO_ROOT
from shared_components.workflow.invocation import unknown_overrides

README = (REPO_ROOT / "README.md").read_text()
# the MONAI bundle CLI's own arguments (not config overrides)
BUNDLE_ARGS = {"config_file", "meta_file", "logging_file", "tracking", "args_file"}


def _commands() -> list[tuple[str, str]]:
    """(folder the command runs in, command line) of every command in the README's bash blocks, continuation lines
    joined and comments dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        cwd = "."
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if not line or line.startswith("#"):
                continue
            for part in (p.strip() for p in line.split("&&")):
                if part.startswith("cd "):
                    cwd = part[3:].strip()
                else:
                    out.append((cwd, part))
    return out


COMMANDS = _commands()
TOOLS = [(cwd, c) for cwd, c in COMMANDS if ".venv/bin/segbundles " in c or re.search(r"scripts/\w+\.py", c)]
BUNDLE_RUNS = [(cwd, c) for cwd, c in COMMANDS if "-m monai.bundle run" in c]


def _flags(tokens: list[str]) -> list[str]:
    return [t[2:].split("=", 1)[0] for t in tokens if t.startswith("--") and len(t) > 2]


def _target(tokens: list[str]) -> tuple[object, list[str]]:
    """The command a ``segbundles ...`` or ``python scripts/x.py ...`` line runs, and its remaining arguments."""
    if any(t.endswith("/segbundles") for t in tokens):
        args = tokens[next(i for i, t in enumerate(tokens) if t.endswith("/segbundles")) + 1 :]
        target: object = cli.SEGBUNDLES
    else:
        i = next(i for i, t in enumerate(tokens) if re.fullmatch(r"(.*/)?scripts/\w+\.py", t))
        script = REPO_ROOT / "scripts" / Path(tokens[i]).name
        assert script.is_file(), f"{tokens[i]} does not exist"
        text, args = script.read_text(), tokens[i + 1 :]
        name, command = re.search(r'script\("([\w-]+)"\)', text), re.search(r'Command\(\s*"([\w.:]+)"', text)
        assert name or command, f"{script} is not a thin cli tool (cli.script or cli.run(Command(...)))"
        target = cli.SEGBUNDLES.commands[name.group(1)] if name else cli.Command(command.group(1))
    while isinstance(target, cli.Group) and args and args[0] in target.commands:
        target, args = target.commands[args[0]], args[1:]
    assert not isinstance(target, cli.Group), f"{args[:1]} is no sub-command ({sorted(target.commands)})"
    return target, args


def test_the_readme_has_commands_to_check():
    assert len(TOOLS) >= 15 and len(BUNDLE_RUNS) >= 8, (len(TOOLS), len(BUNDLE_RUNS))


@pytest.mark.parametrize(("cwd", "line"), TOOLS, ids=[c[:60] for _, c in TOOLS])
def test_tool_commands_exist_with_their_flags(cwd: str, line: str):
    target, args = _target(shlex.split(line))
    fn = target.load() if isinstance(target, cli.Command) else target
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return  # takes any flag (e.g. a synthetic layout's options)
    names = set(params) | {f"no{p}" for p, v in params.items() if isinstance(v.default, bool)}
    unknown = [f for f in _flags(args) if f.replace("-", "_") not in names]
    assert not unknown, f"{line}: no such flag {unknown} (takes {sorted(params)})"


@pytest.mark.parametrize(("cwd", "line"), BUNDLE_RUNS, ids=[c[:60] for _, c in BUNDLE_RUNS])
def test_bundle_commands_override_only_what_the_bundle_has(cwd: str, line: str):
    tokens = shlex.split(line)
    bundle = (REPO_ROOT / cwd).resolve()
    assert (bundle / "configs").is_dir(), f"{line}: run in {cwd}, which is no bundle folder"
    files = tokens[tokens.index("--config_file") + 1]
    configs = [bundle / f for f in (eval(files) if files.startswith("[") else [files])]  # noqa: S307 - README text
    missing = [c for c in configs if not c.is_file()]
    if any("work/" in str(c) for c in missing):
        pytest.skip(f"{line}: reads a file an earlier README command writes ({missing})")
    assert not missing, f"{line}: {missing} do not exist"
    parser = ConfigParser()
    parser.read_config([str(c) for c in configs])
    keys = [f for f in _flags(tokens[tokens.index("-m") :]) if f not in BUNDLE_ARGS]
    assert not unknown_overrides(parser, keys), f"{line}: {unknown_overrides(parser, keys)}"


def test_files_the_commands_read_ship_with_the_repository():
    """Paths inside the repository that README commands read (not ones they write or a user's own data)."""
    read_flags = ("--space", "--levels", "--json_in")
    for _, line in TOOLS:
        tokens = shlex.split(line)
        for flag, value in zip(tokens, tokens[1:], strict=False):
            if flag in read_flags:
                assert (REPO_ROOT / value).is_file(), f"{line}: {value} is not in the repository"


# after the README's set-up (which makes .venv and installs into it), a bare `python`, `segbundles`, `torchrun` or
# `monailabel` needs an activated environment; every tool is named one way, `segbundles ...`, not `scripts/*.py`
BARE = {"python", "python3", "pip", "segbundles", "torchrun", "mlflow", "monailabel"}


@pytest.mark.parametrize(("cwd", "line"), COMMANDS, ids=[c[:60] for _, c in COMMANDS])
def test_commands_run_from_the_set_up_environment(cwd: str, line: str):
    tokens = [t for t in shlex.split(line) if not re.fullmatch(r"[A-Z_]+=\S*", t)]
    if not tokens:
        return  # a shell variable for the next commands (S=sqlite:///...)
    exe, venv = tokens[0], ".venv" if cwd == "." else "../../.venv"
    assert exe not in BARE, f"{line!r}: bare {exe!r} fails without an activated environment; use {venv}/bin/{exe}"
    if "/bin/" in exe:
        assert exe.startswith((f"{venv}/bin/", f"{venv}-monailabel/bin/")), f"{line!r} runs in {cwd}: use {venv}/bin/"
    assert not any(re.search(r"scripts/\w+\.py$", t) for t in tokens), f"{line!r}: name the tool as segbundles ..."
