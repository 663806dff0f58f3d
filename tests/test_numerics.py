"""The pinned float numerics (`terwin.numerics`): the same trained model on every x86-64 machine.

The golden files below were trained on an Intel Xeon with AVX-512 (the development machine). On any
x86-64 machine with AVX2 — the CI machine is another one — the same command must write the same
bytes (with the torch they were recorded with, `GOLDEN_TORCH`); this test is where a machine that
does not is found. A change to a family's recipe, export or file format changes these checksums on
purpose: then run the two commands in `GOLDEN` and put the new checksums here, saying why in the
commit.
"""
import hashlib
import json
import os
import subprocess
import sys

import pytest

from terwin import numerics
from terwin.algo.numerics import cpu_info, report
from terwin.errors import TerwinError

GOLDEN_TORCH = "2.13.0+cpu"   # the torch the checksums were recorded with (its kernels are the numerics)
GOLDEN = {   # the command's arguments after `terwin compress`: sha256 of the model.terwin it writes
    ("--ternary-epochs-scale", "0.02", "--seed", "3"):
        "2bdd4a7ff38c87f3f76355f054bfbfa4cd975b020d122f9c5c554e70f1fc2beb",
    ("--family", "winograd", "--winograd-epochs-scale", "0.02", "--seed", "3"):
        "036255f87b2e187c6c34ea85335a3d68331f972b492e08904ab7771195ded1fe",
}
# a machine with less than this one: MKL's code paths capped at SSE4.2, oneDNN's at SSE4.1
LESSER_MACHINE = {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"}


def _has_avx2() -> bool:
    return "avx2" in (cpu_info("flags") or "").split()


def _unpinned_env(**extra) -> dict:
    """This process's environment without the pin's variables: a child's `import terwin` sets them."""
    env = {k: v for k, v in os.environ.items() if k not in (*numerics.PIN, numerics.MODE_VARIABLE)}
    return {**env, **extra}


def _compress(tmp_path, args, **env_extra):
    env = _unpinned_env(**env_extra)
    out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    proc = subprocess.run([sys.executable, "-m", "terwin", "compress", *args, "--quiet", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    written = json.loads((out / "compress.json").read_text())
    return hashlib.sha256((out / "model.terwin").read_bytes()).hexdigest(), written["numerics"], proc.stderr


@pytest.mark.parametrize("args", list(GOLDEN), ids=["ternary", "winograd"])
def test_a_short_compress_writes_the_same_file_on_every_x86_64_machine(tmp_path, args):
    sha, figures, stderr = _compress(tmp_path, args)
    if figures["pinned"]:
        assert "not pinned" not in stderr
        # with the machine's MKL and oneDNN told they have less: the same file
        assert _compress(tmp_path, args, **LESSER_MACHINE)[0] == sha
        if figures["torch"] == GOLDEN_TORCH:   # another torch has other kernels: the same file on its machines
            assert sha == GOLDEN[args], (f"this machine ({figures}) trained another model from the same seed "
                                         f"with pinned numerics: a kernel choice terwin.numerics does not fix")
    else:   # only where the pin cannot hold, and then the user is told
        assert not (_has_avx2() and figures["machine"] in ("x86_64", "AMD64")), figures
        assert figures["why"] and "float numerics not pinned" in stderr


def test_native_numerics_are_reported_and_not_pinned(tmp_path):
    _, figures, stderr = _compress(tmp_path, list(GOLDEN)[0], TERWIN_NUMERICS="native")
    assert figures["mode"] == "native" and figures["pinned"] is False and figures["why"] == "TERWIN_NUMERICS=native"
    assert "not pinned" not in stderr      # the user asked for it: no note
    assert figures["torch"] and figures["aten_capability"]


def test_a_bad_mode_is_refused_before_training(tmp_path):
    env = {**os.environ, "TERWIN_NUMERICS": "fastest"}
    proc = subprocess.run([sys.executable, "-m", "terwin", "compress", "--out", str(tmp_path / "o")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "terwin compress: error: TERWIN_NUMERICS must be one of pinned, native, not 'fastest'"]
    assert not (tmp_path / "o").exists()


def test_pin_environment_sets_only_what_is_unset():
    env = {}
    numerics.pin_environment(env)
    assert env == numerics.PIN
    user = {"MKL_CBWR": "AVX512"}
    numerics.pin_environment(user)
    assert user == {"MKL_CBWR": "AVX512", "ATEN_CPU_CAPABILITY": "avx2"}
    for off in ({"TERWIN_NUMERICS": "native"}, {"TERWIN_NUMERICS": "bogus"}):
        before = dict(off)
        numerics.pin_environment(off)
        assert off == before
    assert numerics.mode({}) == "pinned" and numerics.mode({"TERWIN_NUMERICS": " Native "}) == "native"
    with pytest.raises(TerwinError, match="TERWIN_NUMERICS must be one of pinned, native"):
        numerics.mode({"TERWIN_NUMERICS": "bogus"})


def test_this_process_is_pinned_and_the_report_names_what_breaks_the_pin():
    figures = report()   # the suite imports terwin before torch runs, as a user's program may
    if _has_avx2() and figures["machine"] in ("x86_64", "AMD64"):
        assert figures["pinned"] and figures["aten_capability"] == "AVX2", figures
        assert figures["mkl_branch"] in ("COMPATIBLE", None), figures   # None: a torch that hides it
    else:
        assert not figures["pinned"] and figures["why"], figures
    figures = report({**numerics.PIN, "MKL_CBWR": "AUTO"})
    assert not figures["pinned"] and ("MKL_CBWR is 'AUTO'" in figures["why"] or "x86-64" in figures["why"])


def test_torch_used_before_terwin_is_reported_not_pinned():
    """A program that computed with torch before importing terwin keeps the kernels it started with:
    the report must say so (and which), not claim the pin."""
    code = ("import json, torch; a = torch.randn(9, 9); a @ a; import terwin; from terwin.algo.numerics import report; "
            "print(json.dumps(report()))")
    proc = subprocess.run([sys.executable, "-c", code], env=_unpinned_env(), capture_output=True, text=True, timeout=120)
    figures = json.loads(proc.stdout)
    if figures["mkl_branch"] is not None or figures["aten_capability"] != "AVX2":
        assert not figures["pinned"] and "before terwin was imported" in figures["why"], figures
    if figures["mkl_branch"] is not None:
        assert figures["mkl_branch"] != "COMPATIBLE"
