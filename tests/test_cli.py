"""The command line: ``segbundles`` and ``scripts/*.py`` help (plain, complete, no MONAI), boolean flags,
``--folds 1`` in every converter, and evaluating a trained bundle on new labelled data in one command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared_components import cli
from shared_components.data import synthetic as S
from shared_components.data.datalist import load_datalist
from shared_components.paths import REPO_ROOT

SCRIPTS = sorted(p.name for p in (REPO_ROOT / "scripts").glob("*.py"))
HEAVY = ("monai", "torch")


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def _commands(group: cli.Group, prefix: str = "") -> list[tuple[str, cli.Target]]:
    out = []
    for name, target in group.commands.items():
        if isinstance(target, cli.Group):
            out += _commands(target, f"{prefix}{name} ")
        else:
            out.append((f"{prefix}{name}", target))
    return out


def _assert_plain(text: str) -> None:
    assert text.strip() and "INFO: Showing help" not in text and "NOTES" not in text
    for markup in ("``", ":func:", ":class:", "(module doc)", "Type: "):
        assert markup not in text, f"{markup!r} in help:\n{text}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help_is_plain(script):
    r = _run(sys.executable, f"scripts/{script}", "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: ") and not r.stderr
    _assert_plain(r.stdout)


@pytest.mark.parametrize("command", [c for c, _ in _commands(cli.SEGBUNDLES)])
def test_every_command_and_flag_has_a_description(command):
    """``segbundles <command> --help``: a one-line summary, and a description for every argument and flag."""
    target = dict(_commands(cli.SEGBUNDLES))[command]
    spec = cli.spec_of(target)
    summary, _, docs = cli.parse_doc(spec.doc)
    assert summary and len(summary) <= 300, summary
    missing = [p.name for p in spec.params if not docs.get(p.name)]
    assert not missing, f"segbundles {command}: no description for {missing} (add them to its Args: section)"
    _assert_plain(cli.help_text(target, f"segbundles {command}"))


def test_help_imports_neither_monai_nor_torch_and_is_fast():
    """Top-level, group and command help read the sources only: no MONAI, no torch, well under 2 s."""
    code = (
        "import contextlib, io, sys, time\n"
        "from shared_components.cli import main\n"
        "t0 = time.perf_counter()\n"
        "for argv in (['--help'], ['prepare', '--help'], ['prepare', 'msd', '--help'], ['benchmark', 'run', '-h'],"
        " ['cv', '--help'], ['evaluate', '--help'], ['demo', '--help'], ['export', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        main(argv)\n"
        f"print(time.perf_counter() - t0, sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    r = _run(sys.executable, "-c", code)
    assert r.returncode == 0, r.stderr
    seconds, heavy = r.stdout.split(maxsplit=1)
    assert heavy.strip() == "[]" and float(seconds) < 2.0, r.stdout


def test_segbundles_entry_point():
    """The installed ``segbundles`` command (``[project.scripts]``) lists every command and answers sub-help."""
    exe = shutil.which("segbundles", path=str(Path(sys.executable).parent))
    assert exe, "segbundles is not installed: .venv/bin/pip install --no-deps -e ."
    t0 = time.perf_counter()
    r = _run(exe, "--help")
    assert r.returncode == 0, r.stderr
    assert time.perf_counter() - t0 < 10
    for name in cli.SEGBUNDLES.commands:
        assert f"\n  {name} " in r.stdout, name
    _assert_plain(r.stdout)
    r = _run(exe, "prepare", "msd", "--help")
    words = " ".join(r.stdout.split())
    assert r.returncode == 0 and "--folds 5 number of cross-validation folds" in words
    assert "1 puts every case in fold 0" in words
    r = _run(exe, "nonsense")
    assert r.returncode == 2 and "unknown command 'nonsense'" in r.stderr


def test_parse_doc_reads_google_style_args():
    summary, description, args = cli.parse_doc(
        """Summary with ``markup`` and :func:`shared_components.x.f`.

        More text.

        Args:
            a, b: shared text,
                continued.
            c: see ``d``.

        Returns:
            nothing shown.
        """
    )
    assert summary == "Summary with markup and f." and description == "More text."
    assert args == {"a": "shared text, continued.", "b": "shared text, continued.", "c": "see d."}


def test_boolean_flags_take_true_and_false():
    def f(zip: bool = False, onnx: bool = True, n: int = 1) -> None:  # noqa: A002
        pass

    args = ["--zip", "true", "--onnx=false", "--n", "1", "--zip", "--", "--onnx", "true"]
    assert cli._bool_flags(f, args) == ["--zip", "--noonnx", "--n", "1", "--zip", "--", "--onnx", "true"]


@pytest.mark.parametrize("error", [FileExistsError, FileNotFoundError, ValueError])
def test_expected_errors_end_with_one_line_and_status_2(error, capsys):
    def f() -> None:
        raise error("out/x exists; pass --overwrite to replace it.")

    with pytest.raises(SystemExit) as done:
        cli._call(f, [], "prog")
    assert done.value.code == 2
    assert capsys.readouterr().err == "error: out/x exists; pass --overwrite to replace it.\n"


def test_synthetic_list_shows_whole_sentences():
    out = cli._resolve("shared_components.commands:synthetic")("list")
    entries: list[str] = []
    for line in out.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            entries.append(line.strip())
        else:
            entries[-1] += " " + line.strip()
    assert [e.split()[0] for e in entries] == list(S.WRITERS)
    assert all(e.endswith(".") for e in entries), out


# ---- --folds 1 --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """Tiny synthetic data in each converter's layout, with the converter options they need."""
    root = tmp_path_factory.mktemp("layouts")
    return {
        "msd": (S.write_msd_hippocampus(root / "Task04", n_train=3, n_test=0), {}),
        "lits": (S.write_lits(root / "LiTS", n=2, n_test=0), {}),
        "abdomenct1k": (S.write_abdomenct1k(root / "AbdomenCT-1K", n=2, n_unlabelled=0), {}),
        "brats": (S.write_brats(root / "BraTS2021", n=2, n_unlabelled=0), {}),
        "csv": (S.write_gandlf_csv(root / "gandlf", n=2) / "train.csv", {"convention": "brats2021"}),
        "folder": (S.write_amygdala_folders(root / "amygdala", n_per_centre=1), {"modality": "T1"}),
    }


@pytest.mark.parametrize("layout", ["msd", "lits", "abdomenct1k", "brats", "csv", "folder"])
def test_every_converter_accepts_one_fold(layouts, layout, tmp_path):
    """``prepare <layout> --folds 1``: every case in fold 0, so ``--fold 0`` evaluates all of them."""
    src, options = layouts[layout]
    convert = cli.PREPARE.commands[layout].load()
    out = convert(str(src), str(tmp_path), folds=1, **options)
    assert out.startswith("wrote ")
    training = load_datalist(tmp_path / "datalist.json")["training"]
    assert training and {e["fold"] for e in training} == {0}


def test_prepare_msd_folds_1_on_the_command_line(layouts, tmp_path):
    r = _run(sys.executable, "scripts/prepare_data.py", "msd", "--src", str(layouts["msd"][0]), "--dst", str(tmp_path),
             "--folds", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "training: 3 cases | per fold 0: 3" in r.stdout


# ---- evaluate a trained bundle on new labelled data ----------------------------------------------------------------


@pytest.fixture
def few_hippocampus_cases(hippo_dir: Path, tmp_path: Path) -> Path:
    """An MSD task folder with 3 real hippocampus cases (images and labels linked, dataset.json rewritten)."""
    meta = json.loads((hippo_dir / "dataset.json").read_text())
    meta["training"], meta["test"] = meta["training"][-3:], []
    dst = tmp_path / "Task04_few"
    for sub in ("imagesTr", "labelsTr"):
        (dst / sub).mkdir(parents=True)
    for e in meta["training"]:
        for key in ("image", "label"):
            (dst / e[key]).symlink_to(hippo_dir / e[key])
    meta["numTraining"] = 3
    (dst / "dataset.json").write_text(json.dumps(meta))
    return dst


@pytest.mark.slow
def test_evaluate_a_trained_bundle_on_new_data_in_one_command(few_hippocampus_cases, tmp_path):
    """``segbundles evaluate hippocampus_mri_unet --data DIR``: converted with one fold, evaluated by the bundle's
    own evaluation on its shipped weights, every case an evaluation case, tables where it says."""
    out = tmp_path / "out"
    r = _run(sys.executable, "-m", "shared_components.cli", "evaluate", "hippocampus_mri_unet", "--data",
             str(few_hippocampus_cases), "--out", str(out), "--save_predictions", "true")  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert {e["fold"] for e in load_datalist(out / "datalist.json")["training"]} == {0}
    per_case = (out / "eval" / "metrics_per_case.csv").read_text().splitlines()
    cases = {line.split(",")[0] for line in per_case[1:]}
    assert len(cases) == 3
    dice = float(next(ln for ln in r.stdout.splitlines() if ln.startswith("mean foreground Dice: ")).split()[-1])
    assert dice > 0.7, r.stdout
    assert f"tables in {out / 'eval'}:" in r.stdout and len(list((out / "eval" / "predictions").glob("*.nii.gz"))) == 3


def test_evaluate_refuses_data_the_bundle_cannot_read(layouts, tmp_path):
    """Classes or channels other than the bundle's are refused before anything runs."""
    from shared_components.experiments.evaluate_data import evaluate_on_data

    with pytest.raises(ValueError, match="5 label values"):
        evaluate_on_data("hippocampus_mri_unet", str(layouts["abdomenct1k"][0]), str(tmp_path / "a"), "abdomenct1k")
    with pytest.raises(ValueError, match="4 image channel"):
        evaluate_on_data("hippocampus_mri_unet", str(layouts["brats"][0]), str(tmp_path / "b"), "brats")
    with pytest.raises(FileNotFoundError, match="no trained weights"):
        evaluate_on_data("spleen_ct_unet", str(layouts["msd"][0]), out=str(tmp_path / "spleen"))
