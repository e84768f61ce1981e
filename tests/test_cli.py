from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main


def _run(*args):
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args],
                          check=False, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_synth_writes_dataset_and_prints_summary(tmp_path):
    code, out, err = _run("synth", "--modality", "mri", "--cases", "3", "--out", str(tmp_path / "d"), "--seed", "2",
                          "--shape", "24", "28", "24")
    assert code == 0, err
    meta = json.loads((tmp_path / "d/dataset.json").read_text())
    assert meta["numTraining"] == 3 and meta["seed"] == 2
    for needle in ("cases     3", "shape     min 24x28x24", "spacing", "orient.", "anterior", "posterior",
                   "mri_002"):
        assert needle in out


@pytest.mark.parametrize("args, rule", [
    (["--modality", "ct", "--cases", "0"], "argument --cases: must be >= 1, got 0"),
    (["--modality", "pet", "--cases", "2"], "argument --modality: invalid choice: 'pet'"),
    (["--modality", "ct", "--cases", "two"], "argument --cases: must be a whole number, got 'two'"),
])
def test_bad_arguments_give_one_line_with_the_rule(tmp_path, args, rule):
    code, out, err = _run("synth", *args, "--out", str(tmp_path / "d"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and rule in err and err.startswith("pipeline synth: error:")
    assert not (tmp_path / "d").exists()


def test_non_writable_out_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = _run("synth", "--modality", "ct", "--cases", "1", "--out", str(blocker / "sub"))
    assert code == 2 and err.count("\n") == 1
    assert f"--out must be a writable folder, got '{blocker / 'sub'}'" in err


def test_validate_exit_status_and_problem_listing(tmp_path, ct_dataset, capsys):
    import shutil

    assert main(["validate", str(ct_dataset)]) == 0
    shutil.copytree(ct_dataset, tmp_path / "d")
    (tmp_path / "d/labelsTr/ct_001.nii.gz").unlink()
    assert main(["validate", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "ct_001.nii.gz: every training case must have its label file (missing label)" in err


def test_summary_and_folds(tmp_path, ct_dataset, capsys):
    assert main(["summary", str(ct_dataset), "--no-intensity"]) == 0
    assert "orient.   LAS 2, LPS 2, RAS 2" in capsys.readouterr().out
    assert main(["folds", str(ct_dataset), "--num-folds", "3", "--seed", "1", "--out", str(tmp_path / "s.json")]) == 0
    splits = json.loads((tmp_path / "s.json").read_text())
    assert splits["num_folds"] == 3 and sum(len(f["val"]) for f in splits["folds"]) == 6


def test_a_missing_dataset_is_one_line(tmp_path, capsys):
    assert main(["summary", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err == (f"pipeline summary: error: dataset must be an existing file or folder, got "
                                       f"'{tmp_path / 'missing'}'\n")
    assert main(["validate", str(tmp_path), "--format", "paired", "--labels", str(tmp_path / "gone")]) == 2
    assert "--labels must be an existing file or folder" in capsys.readouterr().err


@pytest.mark.parametrize("args, rule", [
    (["--minutes", "0"], "argument --minutes: must be > 0, got 0.0"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["--modality", "pet"], "argument --modality: invalid choice: 'pet'"),
])
def test_plan_bad_arguments_are_one_line(tmp_path, ct_dataset, args, rule):
    code, _out, err = _run("plan", str(ct_dataset), "--out", str(tmp_path / "p.json"), *args)
    assert code == 2 and err.count("\n") == 1 and rule in err and not (tmp_path / "p.json").exists()


def test_synth_two_channel_layouts(tmp_path):
    for layout in ("nnunet", "csv"):
        code, out, err = _run("synth", "--modality", "mri", "--cases", "2", "--out", str(tmp_path / layout),
                              "--shape", "16", "18", "14", "--channels", "2", "--layout", layout)
        assert code == 0, err
        assert "cases     2" in out
    assert (tmp_path / "nnunet/imagesTr/mri_001_0001.nii.gz").is_file() and (tmp_path / "csv/dataset.csv").is_file()
    code, _, err = _run("synth", "--modality", "ct", "--channels", "2", "--out", str(tmp_path / "x"))
    assert code == 2 and "channels must be 1, or 2 for 3D MRI" in err


@pytest.mark.parametrize("layout", ["csv", "nnunet"])
def test_a_two_channel_layout_with_one_channel_says_what_it_needs(tmp_path, layout, capsys):
    """Issue 25: it said "layout must be one of msd, nnunet, csv (...), got 'csv'" of a layout in that list."""
    assert main(["synth", "--modality", "mri", "--cases", "1", "--out", str(tmp_path / "d"), "--layout", layout]) == 2
    err = capsys.readouterr().err
    assert err == (f"pipeline synth: error: --layout {layout} is for two-channel data (--channels 2: 3D MRI); one "
                   f"channel is written with --layout msd, got --layout {layout} with --channels 1\n")
    assert not (tmp_path / "d").exists()


def test_validate_an_empty_or_malformed_dataset_exits_1(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/dataset.json").write_text(json.dumps({"training": [], "labels": {"0": "background"}}))
    assert main(["validate", str(tmp_path / "empty")]) == 1
    assert "a dataset must hold at least one case, got 0 cases" in capsys.readouterr().err
    (tmp_path / "empty/dataset.json").write_text(json.dumps({"training": "abc", "labels": {"0": "background"}}))
    assert main(["validate", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'training' must be a list of entries, got str" in err


def test_segment_options_given_twice_are_one_line(tmp_path):
    code, _, err = _run("segment", "--model", "m.ts", "--input", "a", "--input", "b", "--output", str(tmp_path))
    assert code == 2 and err.count("\n") == 1
    assert "argument --input: may be given once, got 'a' and 'b'" in err


@pytest.mark.parametrize("args, rule", [
    (["segment", "--model", "m.ts", "--input", "in", "--output", "out", "--shard", "-1/2"],
     "pipeline segment: error: shard must be i/n with 0 <= i < n (e.g. 0/4), got '-1/2'"),
    (["synth", "--modality", "mri", "--cases", "1", "--out", "OUT", "--shape", "4", "4"],
     "pipeline synth: error: shape must be 3 values x y z (2 values x y with dims 2), each >= 4, got 4 4"),
])
def test_values_that_break_a_rule_are_one_line(tmp_path, args, rule):
    code, _, err = _run(*[a.replace("OUT", str(tmp_path / "d")) for a in args])
    assert code == 2 and err.count("\n") == 1 and err.startswith(rule), err
    assert not (tmp_path / "d" / "dataset.json").exists()


def test_a_shipped_bundle_name_is_the_shipped_bundle(tmp_path, monkeypatch, caplog):
    import logging

    from pipeline.cli.commands import bundle_dir as _bundle_dir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "unetpp_mri_segmentation/configs").mkdir(parents=True)  # a same-named folder here
    with caplog.at_level(logging.INFO, logger="pipeline"):
        chosen = _bundle_dir("unetpp_mri_segmentation")
    assert chosen.parent.name == "bundles" and chosen != tmp_path / "unetpp_mri_segmentation"
    assert "not the folder ./unetpp_mri_segmentation (pass ./unetpp_mri_segmentation" in caplog.text
    assert _bundle_dir("./unetpp_mri_segmentation").resolve() == tmp_path / "unetpp_mri_segmentation"


# --- issue 25, section CLI -------------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
SHIPPED_MRI = REPO / "bundles/unetpp_mri_segmentation/models/model.ts"


def test_validate_and_segment_say_their_result_once(tmp_path, ct_dataset, mri_dataset):
    """Issue 25: at INFO, the library logged the summary the command then printed."""
    code, out, err = _run("validate", str(ct_dataset))
    assert code == 0 and out == f"{ct_dataset}/dataset.json: 6 cases, no problems\n", err
    assert "cases passed validation" not in err and "6 cases" not in err
    (tmp_path / "in").mkdir()
    shutil.copy(next((mri_dataset / "imagesTr").glob("*.nii.gz")), tmp_path / "in")
    code, out, err = _run("segment", "--model", str(SHIPPED_MRI), "--input", str(tmp_path / "in"), "--output",
                          str(tmp_path / "out"), "--device", "cpu")
    assert code == 0 and out.count("1 segmented") == 1, err
    assert "segmented" not in err and "done:" not in err and "1/1" not in err, err


@pytest.mark.parametrize("args", [["bundle"], ["bundle", "--help"], ["bundle", "-h"], ["-v", "bundle"]])
def test_bundle_help_is_this_tools(args):
    code, out, err = _run(*args)
    assert code == 0 and err == "", err
    assert out.startswith("usage: pipeline bundle") and "python -m monai.bundle" in out
    assert "python -m pipeline bundle run training --config_file" in out and "--bundle_root" in out
    assert "optional_import" not in out and "fire" not in out.lower()


def test_bundle_command_help_reaches_monai():
    """`run --help` fails in MONAI's own command line (Fire needs `run -- --help`): here both work."""
    code, out, err = _run("bundle", "verify_metadata", "--help")
    assert code == 0 and "Verify the provided `metadata` file" in out + err and "Traceback" not in err, err


def test_bundle_runs_hide_monais_banner_and_keep_real_warnings(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"run": ["$print('ran')", "$__import__('warnings').warn('a real warning')"]}))
    code, out, err = _run("bundle", "run", "--config_file", str(config))
    assert code == 0 and "ran" in out, err
    assert "a real warning" in err and "Only proceed if this config is from a source you trust" not in err
    code, out, err = _run("-v", "bundle", "run", "--config_file", str(config))
    assert code == 0 and "Only proceed if this config is from a source you trust" in err, "-v shows everything"
    code, _, err = _run("bundle", "no_such_command")
    assert code == 2, "a bundle run exits with MONAI's status"


LONG = ["summary", "validate", "plan", "segment", "demo", "bundle"]


@pytest.mark.parametrize("command", LONG)
def test_no_progress_before_or_after_every_long_command(command, tmp_path):
    from pipeline.cli import build_parser

    rest = {"summary": [str(tmp_path)], "validate": [str(tmp_path)], "plan": [str(tmp_path), "--out", "p.json"],
            "segment": ["--model", "m.ts", "--input", "i", "--output", "o"], "demo": [], "bundle": []}[command]
    parser = build_parser()
    assert parser.parse_args([command, *rest, "--no-progress"] if command != "bundle" else
                             [command, "--no-progress", "run"]).no_progress
    assert parser.parse_args(["--no-progress", command, *rest]).no_progress
    assert not parser.parse_args([command, *rest]).no_progress
    assert "--no-progress" in parser._subparsers._group_actions[0].choices[command].format_help()


def test_no_progress_is_accepted_but_not_listed_where_there_is_none(tmp_path):
    from pipeline.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["folds", str(tmp_path), "--out", "f.json", "--no-progress"]).no_progress
    assert "--no-progress" not in parser._subparsers._group_actions[0].choices["folds"].format_help()


def _dataset(root: Path, training: object) -> str:
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"training": training, "labels": {"0": "background"}}))
    return str(root)


# (arguments, exit status): every command, a run that is fine, data that break a rule, and a usage error
EXIT_CASES = [
    (["synth", "--modality", "ct", "--cases", "1", "--shape", "8", "8", "4", "--out", "{tmp}/s"], 0),
    (["synth", "--modality", "ct", "--cases", "0", "--out", "{tmp}/s"], 2),
    (["summary", "{ct}", "--no-intensity"], 0),
    (["summary", "{malformed}"], 1),
    (["summary", "{tmp}/nonexistent"], 2),
    (["validate", "{ct}"], 0),
    (["validate", "{empty}"], 1),
    (["validate", "{tmp}/nonexistent"], 2),
    (["folds", "{ct}", "--out", "{tmp}/f.json"], 0),
    (["folds", "{malformed}", "--out", "{tmp}/f.json"], 1),
    (["folds", "{ct}", "--num-folds", "7", "--out", "{tmp}/f.json"], 2),
    (["folds", "{tmp}/nonexistent", "--out", "{tmp}/f.json"], 2),
    (["plan", "{empty}", "--out", "{tmp}/p.json", "--device", "cpu"], 1),
    (["plan", "{tmp}/nonexistent", "--out", "{tmp}/p.json"], 2),
    (["export", "--checkpoint", "{tmp}/nonexistent.pt", "--out", "{tmp}/m.ts"], 2),
    (["segment", "--model", str(SHIPPED_MRI), "--input", "{tmp}/nonexistent", "--output", "{tmp}/o"], 2),
    (["segment", "--model", "{tmp}/nonexistent.ts", "--input", "{ct}", "--output", "{tmp}/o"], 2),
    (["segment", "--model", str(SHIPPED_MRI), "--input", "{tmp}/list.csv", "--output", "{tmp}/o"], 2),
    (["sync-configs", "unetpp_ct_segmentation", "--check"], 0),
    (["sync-configs", "{tmp}/nonexistent"], 2),
    (["demo", "--out", "{tmp}/a_file/sub"], 2),
]


@pytest.mark.parametrize("args, status", EXIT_CASES, ids=[f"{a[0]}-{s}-{k}" for k, (a, s) in enumerate(EXIT_CASES)])
def test_exit_status_scheme(args, status, tmp_path, ct_dataset, capsys):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "list.csv").write_text("path\nx.nii.gz\n")  # a CSV input without its 'image' column
    values = {"tmp": str(tmp_path), "ct": str(ct_dataset), "empty": _dataset(tmp_path / "empty", []),
              "malformed": _dataset(tmp_path / "malformed", "abc")}
    try:
        code = main([a.format(**values) for a in args])
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    err = capsys.readouterr().err
    assert code == status, err
    if status:
        assert err.count("\n") == 1 and err.startswith(f"pipeline {args[0]}: "), err


def test_a_failed_segmentation_case_is_status_1(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in/broken.nii.gz").write_bytes(b"not a NIfTI file")
    assert main(["segment", "--model", str(SHIPPED_MRI), "--input", str(tmp_path / "in"), "--output",
                 str(tmp_path / "out"), "--device", "cpu", "--no-progress"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_the_exit_status_table_is_in_the_help_and_in_docs_cli():
    from pipeline.cli.parser import EXIT_CODES

    table = (REPO / "docs/cli.md").read_text()
    codes = re.findall(r"^\| *`?(\d+)`? *\|", table, flags=re.MULTILINE)
    assert codes == ["0", "1", "2", "130", "141"], "one table, in docs/cli.md"
    assert [line.split()[0] for line in EXIT_CODES.splitlines()[1:] if line[2:3].isdigit()] == codes


def _subcommands():
    from pipeline.cli import build_parser

    return build_parser()._subparsers._group_actions[0].choices


@pytest.mark.parametrize("command", ["synth", "summary", "validate", "folds", "plan", "export", "segment",
                                     "sync-configs", "bundle", "demo"])
def test_every_command_has_a_description_an_example_and_its_defaults(command):
    from pipeline.cli import build_parser

    text = _subcommands()[command].format_help()
    description, _, example = text.partition("\nexample:\n")
    assert len(description.split("\n\n")[2]) > 40, "a description under the one-line summary"
    lines = [line.strip() for line in example.splitlines() if "python -m pipeline" in line]
    assert len(lines) == 1 and lines[0].split()[3] == command
    if command != "bundle":  # bundle's arguments are MONAI's
        build_parser().parse_args(shlex.split(lines[0])[3:])
    shown = {"synth": "(default: 8)", "summary": "(default: 20)", "validate": "(default: auto)", "folds":
             "(default: 5)", "plan": "(default: 60.0)", "export": "(default: cpu)", "segment": "(default: auto)",
             "demo": "(default: 40)", "sync-configs": "", "bundle": ""}[command]
    assert shown in " ".join(text.split()), "defaults visible"
    assert "(default: False)" not in text and "(default: None)" not in text


def test_a_closed_output_pipe_is_quiet(tmp_path):
    code = ("import sys; from pipeline.cli import commands, main\n"
            "commands.cmd_folds = lambda args: [print('x' * 1000) for _ in range(10000)] and 0\n"
            f"sys.exit(main(['folds', {str(tmp_path)!r}, '--out', 'f.json']))")
    script = f'{sys.executable} -c "{code}" | head -1; echo "${{PIPESTATUS[0]}}"'
    proc = subprocess.run(["bash", "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert proc.stdout.splitlines()[-1] == "141" and proc.stderr == "", proc.stderr


def test_printed_next_steps_name_the_interpreter_that_ran(monkeypatch, tmp_path):
    """`plan` prints its next command with `python` only where that is this interpreter (an active venv)."""
    import shutil as _shutil

    from pipeline.cli.commands import python_invocation

    monkeypatch.setattr(_shutil, "which", lambda name: sys.executable)
    assert python_invocation() == "python"
    monkeypatch.setattr(_shutil, "which", lambda name: "/usr/bin/python")
    monkeypatch.chdir(tmp_path)
    assert python_invocation() == sys.executable, "outside the venv a bare python would not find the package"
