#!/usr/bin/env bash
# Everything terwin needs on a fresh machine: the Python package with its pinned ranges, and Icarus Verilog.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

echo "[setup] installing terwin and its Python dependencies (quick when already satisfied)" >&2
# torch first, pinned to the CPU build the machine carries (pip's find-links): an unpinned
# torch would pull the multi-GB CUDA build.
"$PY" -m pip install --quiet --root-user-action=ignore "torch==2.13.0"
"$PY" -m pip install --quiet --root-user-action=ignore -e ".[test]"

if ! command -v iverilog >/dev/null 2>&1; then
    echo "[setup] installing Icarus Verilog" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq iverilog >/dev/null
fi
echo "[setup] ready: $("$PY" -c 'import terwin; print("terwin", terwin.__version__)'), $(iverilog -V 2>&1 | head -n1)" >&2
