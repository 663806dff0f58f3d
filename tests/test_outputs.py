"""Nothing of the user's is ever deleted or overwritten silently (`terwin.outdir`).

For every command with an output folder or file: a folder holding a user's files is refused without
--force and left exactly as it was (every path and every byte); with --force the user's files
survive success and failure alike; bad output paths are refused before any long work; an output
file is never one of the command's inputs.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from terwin import fileformat
from terwin.cli import main
from terwin.outdir import MANIFEST, OutputFolder, foreign_files
from terwin.spec import PE4X4
from terwin.synthetic import random_deployment

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small model on the digits' 8x8 input (verify streams digits images through it)."""
    path = tmp_path_factory.mktemp("model") / "small.terwin"
    fileformat.save(random_deployment(PE4X4, seed=31, topology=(("conv2d", 6), ("maxpool2d", 2), ("linear", 10)),
                                      input_shape=(1, 8, 8)), path)
    return path


def snapshot(root: Path) -> dict:
    """Every path under `root` (hidden ones too) with its bytes; folders as None."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), root)] = None
        for name in filenames:
            found[os.path.relpath(os.path.join(dirpath, name), root)] = Path(dirpath, name).read_bytes()
    return found


def users_folder(path: Path) -> Path:
    """A folder of the user's, with files where terwin writes (build/, report.json) and elsewhere."""
    (path / "build").mkdir(parents=True)
    (path / "build" / "mine.v").write_text("module mine; endmodule\n")
    (path / "notes.txt").write_text("the user's notes\n")
    (path / "report.json").write_text('{"the user": "data"}\n')
    return path


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.err, captured.out


def assert_refused(rc, err, command, message):
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"terwin {command}: error: "), err
    assert message in err, err


FOLDER_COMMANDS = {  # argv of each command writing an output folder, before --out
    "generate": lambda model: ["generate", model],
    "compress": lambda model: ["compress", "--quiet"],
    "build": lambda model: ["build", model, "--board", "icebreaker", "--quiet"],
    "demo": lambda model: ["demo"],
    "explore": lambda model: ["explore", model, "--board", "icebreaker", "--axis", "pe_rows=4", "--quiet"],
}


@pytest.mark.parametrize("command", FOLDER_COMMANDS)
def test_a_folder_holding_a_users_files_is_refused_without_force(command, model, tmp_path, capsys):
    out = users_folder(tmp_path / "out")
    before = snapshot(tmp_path)
    rc, err, stdout = run(capsys, *FOLDER_COMMANDS[command](model), "--out", out)
    # one line, nothing else printed: refused before any training, simulation or build
    assert_refused(rc, err, command, f"--out {out}: holds files terwin did not write, such as notes.txt;")
    assert stdout == ""
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", FOLDER_COMMANDS)
@pytest.mark.parametrize("where, message", [
    ("a file", "exists and is not a folder"),
    ("inside a file", "is a file, not a folder"),
    ("/proc/x", "cannot write in /proc"),
])
def test_bad_output_folders_are_refused_before_any_work(command, where, message, model, tmp_path, capsys):
    (tmp_path / "file").write_text("the user's\n")
    out = {"a file": tmp_path / "file", "inside a file": tmp_path / "file" / "sub", "/proc/x": "/proc/x"}[where]
    before = snapshot(tmp_path)
    rc, err, stdout = run(capsys, *FOLDER_COMMANDS[command](model), "--out", out)
    assert_refused(rc, err, command, f"--out {out}: ")
    assert message in err
    assert stdout == ""
    assert snapshot(tmp_path) == before


def test_generate_with_force_keeps_the_users_files(model, tmp_path, capsys):
    out = users_folder(tmp_path / "out")
    mine = snapshot(out)
    assert run(capsys, "generate", model, "--out", out, "--force")[0] == 0
    after = snapshot(out)
    assert {k: after[k] for k in mine} == mine  # every file of the user's, byte for byte
    written = json.loads((out / MANIFEST).read_text())["files"]
    assert "terwin_top.v" in written and "manifest.json" in written and "notes.txt" not in written
    assert sorted(foreign_files(out)) == ["build/mine.v", "notes.txt", "report.json"]
    # the user's files stay foreign: a second run still needs --force
    assert run(capsys, "generate", model, "--out", out)[0] == 2


def test_a_folder_terwin_wrote_is_rewritten_without_force(model, tmp_path, capsys):
    out = tmp_path / "gen"
    assert run(capsys, "generate", model, "--out", out)[0] == 0
    verilog = (out / "terwin_top.v").read_bytes()
    (out / "terwin_top.v").write_text("stale")
    assert run(capsys, "generate", model, "--out", out)[0] == 0
    assert (out / "terwin_top.v").read_bytes() == verilog
    assert foreign_files(out) == [] and not [p for p in os.listdir(tmp_path) if p != "gen"]  # no staging left


def test_generate_failing_at_the_end_changes_nothing(model, tmp_path, capsys):
    """A user's folder where terwin writes manifest.json: generation runs, then nothing is moved."""
    out = users_folder(tmp_path / "out")
    (out / "manifest.json").mkdir()
    before = snapshot(tmp_path)
    rc, err, _ = run(capsys, "generate", model, "--out", out, "--force")
    assert_refused(rc, err, "generate", "manifest.json is a folder where terwin writes a file")
    assert snapshot(tmp_path) == before


def test_compress_with_force_keeps_the_users_files(tmp_path, capsys):
    out = users_folder(tmp_path / "out")
    mine = snapshot(out)
    rc, err, _ = run(capsys, "compress", "--ternary-epochs-scale", "0.02", "--quiet", "--force", "--out", out)
    assert rc == 0, err
    after = snapshot(out)
    assert {k: after[k] for k in mine} == mine
    assert json.loads((out / MANIFEST).read_text())["files"] == ["compress.json", "model.terwin"]
    assert sorted(after) == sorted([*mine, MANIFEST, "compress.json", "model.terwin"])  # no staging folder left


def test_compress_failing_keeps_the_users_files_and_creates_nothing(tmp_path, capsys):
    out = users_folder(tmp_path / "out")
    before = snapshot(tmp_path)
    for target in (out, tmp_path / "new" / "deep"):
        rc, err, _ = run(capsys, "compress", "--tile-sparsity", "1.5", "--force", "--quiet", "--out", target)
        assert_refused(rc, err, "compress", "--tile-sparsity must lie in [0, 1)")
        assert snapshot(tmp_path) == before  # no folder left behind either


def test_build_failing_keeps_the_users_files_and_creates_nothing(model, tmp_path, capsys, monkeypatch):
    """A synthesis tool that fails ($YOSYS names the Yosys to run): the build fails after its folder was
    staged; its logs are kept outside the output folder, where the error says."""
    monkeypatch.setenv("YOSYS", "false")
    out = users_folder(tmp_path / "out")
    before = snapshot(tmp_path)
    for target in (out, tmp_path / "new" / "deep"):
        rc, err, _ = run(capsys, "build", model, "--board", "icebreaker", "--force", "--quiet", "--out", target)
        assert rc == 2 and err.count("\n") == 1, err
        assert snapshot(tmp_path) == before
        kept = Path(re.search(r"see (\S+/build\.log)", err)[1])
        assert kept.is_file() and tmp_path not in kept.parents
        shutil.rmtree(kept.parent.parent)


@pytest.mark.build
def test_build_with_force_writes_beside_the_users_files(model, tmp_path, capsys):
    """The one real build here: the user's build/mine.v survives in the folder the tools' files go to."""
    out = users_folder(tmp_path / "out")
    mine = snapshot(out)
    rc, err, _ = run(capsys, "build", model, "--board", "icebreaker", "--clock-mhz", "24", "--force", "--quiet",
                     "--out", out)
    assert rc == 0, err
    after = snapshot(out)
    assert {k: after.get(k, b"gone") for k in mine if k != "report.json"} == \
        {k: v for k, v in mine.items() if k != "report.json"}
    assert json.loads((out / "report.json").read_text())["fits"]  # --force: terwin's report.json replaced the user's
    assert (out / "terwin.bin").stat().st_size > 100_000 and (out / "build" / "build.log").is_file()
    assert sorted(foreign_files(out)) == ["build/mine.v", "notes.txt"]


def test_a_folder_the_demo_stages_write_is_terwins_throughout(tmp_path, capsys):
    """The demo's stages by hand (compress, simulate --json, generate, report into one folder): every
    file is terwin's, so the demo's up-front check and every stage accept the folder again."""
    demo = tmp_path / "demo"
    name = demo / "ternary-50"
    assert run(capsys, "compress", "--ternary-epochs-scale", "0.02", "--quiet", "--out", name)[0] == 0
    assert run(capsys, "simulate", name / "model.terwin", "--json", name / "simulate.json")[0] == 0
    assert run(capsys, "generate", name / "model.terwin", "--out", name / "rtl")[0] == 0
    assert run(capsys, "report", demo)[0] == 0
    assert foreign_files(demo) == []
    assert run(capsys, "compress", "--ternary-epochs-scale", "0.02", "--quiet", "--out", name)[0] == 0
    assert run(capsys, "report", demo)[0] == 0 and foreign_files(demo) == []


def test_demo_failing_keeps_the_users_files(tmp_path, capsys):
    """With --force the demo starts, and its first stage fails on the user's file named ternary-0."""
    out = users_folder(tmp_path / "out")
    (out / "ternary-0").write_text("the user's, not a folder\n")
    before = snapshot(tmp_path)
    rc, err, _ = run(capsys, "demo", "--out", out, "--force", "--no-build", "--no-winograd")
    assert rc == 2
    assert f"terwin compress: error: --out {out / 'ternary-0'}: exists and is not a folder" in err
    assert snapshot(tmp_path) == before


# -- report: writes into a folder of inputs --------------------------------------------------------

@pytest.fixture
def model_folder(model, tmp_path, capsys):
    """A folder the user assembled: a model of theirs, a note, and terwin's simulate.json."""
    folder = tmp_path / "runs"
    (folder / "m").mkdir(parents=True)
    (folder / "m" / "model.terwin").write_bytes(model.read_bytes())
    (folder / "notes.txt").write_text("the user's notes\n")
    assert run(capsys, "simulate", model, "--json", folder / "m" / "simulate.json")[0] == 0
    return folder


def test_report_in_a_users_folder_needs_no_force_and_runs_again(model_folder, capsys):
    mine = snapshot(model_folder)
    for _ in range(2):  # the second run replaces terwin's own report without --force
        assert run(capsys, "report", model_folder)[0] == 0
    after = snapshot(model_folder)
    assert {k: after[k] for k in mine} == mine
    assert (model_folder / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert sorted(foreign_files(model_folder)) == ["m/model.terwin", "m/simulate.json", "notes.txt"]


def test_report_never_replaces_a_users_report(model_folder, capsys):
    (model_folder / "report.html").write_text("the user's report\n")
    before = snapshot(model_folder)
    rc, err, _ = run(capsys, "report", model_folder)
    assert_refused(rc, err, "report", "terwin would replace report.html, which it did not write")
    assert snapshot(model_folder) == before
    (model_folder / "report.md").mkdir()  # a failure at the end, with --force: nothing changes either
    before = snapshot(model_folder)
    rc, err, _ = run(capsys, "report", model_folder, "--force")
    assert_refused(rc, err, "report", "report.md is a folder where terwin writes a file")
    assert snapshot(model_folder) == before
    os.rmdir(model_folder / "report.md")
    assert run(capsys, "report", model_folder, "--force")[0] == 0
    assert (model_folder / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert (model_folder / "notes.txt").read_text() == "the user's notes\n"


# -- output files (--json) -------------------------------------------------------------------------

JSON_COMMANDS = {  # argv of each command writing --json, before it
    "simulate": lambda model: ["simulate", model],
    "verify": lambda model: ["verify", model, "--images", "1", "--quiet"],
    "explore": lambda model: ["explore", model, "--board", "icebreaker", "--axis", "pe_rows=4", "--quiet"],
}


@pytest.mark.parametrize("command", JSON_COMMANDS)
def test_json_never_overwrites_an_input(command, model, tmp_path, capsys):
    data = model.read_bytes()
    for force in ([], ["--force"]):
        rc, err, _ = run(capsys, *JSON_COMMANDS[command](model), "--json", model, *force)
        assert_refused(rc, err, command, f"--json {model}: is an input of the command")
        assert model.read_bytes() == data


def test_json_never_overwrites_the_rtl_verify_reads(model, tmp_path, capsys):
    rtl = tmp_path / "top.v"
    rtl.write_text("module terwin_top(); endmodule\n")
    rc, err, _ = run(capsys, "verify", model, "--rtl", rtl, "--json", rtl, "--force")
    assert_refused(rc, err, "verify", "is an input of the command")
    assert rtl.read_text() == "module terwin_top(); endmodule\n"


def test_simulate_never_overwrites_the_network_description_it_reads(tmp_path, capsys):
    net = tmp_path / "net.json"
    net.write_bytes((ROOT / "examples" / "resnet18.json").read_bytes())
    alias = tmp_path / "alias.json"
    os.link(net, alias)
    rc, err, _ = run(capsys, "simulate", net, "--json", alias)  # the same file under another name
    assert_refused(rc, err, "simulate", "is an input of the command")
    assert net.read_bytes() == (ROOT / "examples" / "resnet18.json").read_bytes()


@pytest.mark.parametrize("command", JSON_COMMANDS)
@pytest.mark.parametrize("where, message", [
    ("a folder", "is a folder"),
    ("inside a file", "is a file, not a folder"),
    ("/proc/x.json", "cannot write in /proc"),
    ("a user's file", "is not JSON, and terwin did not write it"),
])
def test_bad_json_targets_are_refused_before_any_work(command, where, message, model, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("the user's notes\n")
    target = {"a folder": tmp_path, "inside a file": tmp_path / "notes.txt" / "x.json", "/proc/x.json": "/proc/x.json",
              "a user's file": tmp_path / "notes.txt"}[where]
    before = snapshot(tmp_path)
    rc, err, stdout = run(capsys, *JSON_COMMANDS[command](model), "--json", target)
    assert_refused(rc, err, command, f"--json {target}: ")
    assert message in err
    assert stdout == "" and snapshot(tmp_path) == before


def test_simulate_json_rules(model, tmp_path, capsys):
    out = users_folder(tmp_path / "out")
    mine = snapshot(out)
    # a new file beside the user's, then JSON replaced (the user named it), a non-JSON file only with --force
    assert run(capsys, "simulate", model, "--json", out / "sim.json")[0] == 0
    assert run(capsys, "simulate", model, "--json", out / "report.json")[0] == 0
    assert run(capsys, "simulate", model, "--json", out / "notes.txt")[0] == 2
    assert run(capsys, "simulate", model, "--json", out / "notes.txt", "--force")[0] == 0
    after = snapshot(out)
    assert {k: after[k] for k in mine if k not in ("report.json", "notes.txt")} == \
        {k: v for k, v in mine.items() if k not in ("report.json", "notes.txt")}
    assert json.loads(after["report.json"]) == json.loads(after["sim.json"]) == json.loads(after["notes.txt"])
    assert sorted(os.listdir(out)) == ["build", "notes.txt", "report.json", "sim.json"]  # no temporary file left
    # a failure (an unknown spec) writes nothing
    before = snapshot(tmp_path)
    assert run(capsys, "simulate", model, "--spec", "pe3x3", "--json", out / "new.json")[0] == 2
    assert snapshot(tmp_path) == before


def test_json_in_a_terwin_folder_joins_its_outputs(model, tmp_path, capsys):
    """simulate.json written into a generate folder is terwin's: generate runs there again without --force."""
    out = tmp_path / "gen"
    assert run(capsys, "generate", model, "--out", out)[0] == 0
    assert run(capsys, "simulate", model, "--json", out / "simulate.json")[0] == 0
    assert "simulate.json" in json.loads((out / MANIFEST).read_text())["files"]
    (out / "simulate.json").write_bytes(b"\x00 not JSON any more")  # terwin's own file: still replaced
    assert run(capsys, "simulate", model, "--json", out / "simulate.json")[0] == 0
    assert run(capsys, "generate", model, "--out", out)[0] == 0


def test_verify_failing_keeps_the_users_files(model, tmp_path, capsys):
    out = users_folder(tmp_path / "out")
    before = snapshot(tmp_path)
    rc, err, _ = run(capsys, "verify", model, "--images", "0", "--json", out / "report.json", "--force")
    assert_refused(rc, err, "verify", "--images must be between 1 and")
    assert snapshot(tmp_path) == before


@pytest.mark.cocotb
def test_verify_json_beside_the_users_files(model, tmp_path, rtl_build_root, capsys):
    out = users_folder(tmp_path / "out")
    mine = snapshot(out)
    rc, err, _ = run(capsys, "verify", model, "--images", "1", "--jobs", "1", "--quiet", "--json", out / "verify.json",
                     "--build-dir", rtl_build_root)
    assert rc == 0, err
    after = snapshot(out)
    assert {k: after[k] for k in mine} == mine
    assert json.loads(after["verify.json"])["mismatches"] == 0


# -- the mechanism ---------------------------------------------------------------------------------

@pytest.mark.parametrize("into_users_folder", [False, True])
def test_a_terminated_build_leaves_nothing(model, tmp_path, into_users_folder):
    """SIGTERM (a CI job's timeout, `kill`) in the middle of a real build: the staging folder goes, the
    output folder is as it was (absent, or the user's files untouched), exit 143 with one line."""
    import signal
    import subprocess
    import sys
    import time
    out = users_folder(tmp_path / "out") if into_users_folder else tmp_path / "out"
    before = snapshot(tmp_path)
    argv = [sys.executable, "-m", "terwin", "build", str(model), "--board", "icebreaker", "--out", str(out),
            "--quiet", *(["--force"] if into_users_folder else [])]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 120
    # the build runs in a staging folder (beside the output folder, or inside the user's): wait for it
    while not any(".terwin-tmp-" in name for _, dirs, files in os.walk(tmp_path) for name in dirs + files):
        assert proc.poll() is None and time.monotonic() < deadline, "no staging folder appeared"
        time.sleep(0.05)
    time.sleep(1.0)                     # into synthesis
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "terwin build: terminated", err
    assert snapshot(tmp_path) == before
    # ... and the tools it ran (Yosys, in the staging folder) were stopped with it
    assert not [pid for pid in _pids_in(tmp_path)], "a tool of the terminated build still runs"


def _pids_in(folder: Path) -> list[str]:
    """The processes whose working folder is under `folder` (a removed folder's link ends in " (deleted)")."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd.startswith(str(folder)):
            found.append(pid)
    return found


def test_an_interrupted_command_leaves_nothing(tmp_path):
    out = users_folder(tmp_path / "out")
    before = snapshot(tmp_path)
    for target, force in ((out, True), (tmp_path / "a" / "b" / "c", False)):
        with pytest.raises(KeyboardInterrupt):
            with OutputFolder(target, force=force) as stage:
                (stage / "report.json").write_text("half")
                raise KeyboardInterrupt
        assert snapshot(tmp_path) == before
