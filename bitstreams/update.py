"""Rebuild the reference bitstreams and their table.

    python bitstreams/update.py MODEL.terwin [--name ternary-50] [--board icebreaker=40.5@1 --board ulx3s-85f=90]
    python bitstreams/update.py --table-only

Each build goes to bitstreams/<board>/<name>/ (bitstream + report.json + the model file it was built
from); bitstreams/README.md, and the table in the project README between its markers, are rewritten
from every report.json found.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from terwin import fileformat
from terwin.build import build_model
from terwin.report import _fmt, build_row, markdown_table

HERE = Path(__file__).resolve().parent
# BOARD=MHZ[@SEED]. The iCE40 reference asks 40.5 MHz again: the engine without the global stall had
# found no legal placement there (seeds 1-3) until its PE products stopped using the flip-flops'
# synchronous reset as their "weight 0" (one control set per product; see hw/ternary/pe.py).
DEFAULT_TARGETS = ("icebreaker=40.5@1", "ulx3s-85f=90")

COLUMNS = [("model", "model"), ("board", "board"), ("device", "device"), ("luts", "LUTs"), ("logic_cells", "LCs"),
           ("ffs", "FFs"), ("brams", "BRAM"), ("dsps", "DSP"), ("fmax_mhz", "fmax (MHz)"),
           ("target_mhz", "target (MHz)"), ("cycles_per_image", "cycles / image"),
           ("images_per_s", "images/s at fmax"), ("gops", "GOPS at fmax"), ("gops_per_klut", "GOPS / kLUT")]

PREAMBLE = """# Reference bitstreams

Built with `terwin build` (yowasp Yosys + nextpnr through amaranth-boards; see docs/boards.md) from
the model file kept beside each bitstream. Regenerate with `python bitstreams/update.py MODEL`.

* LUTs: LUT4s (iCE40: `SB_LUT4` after synthesis; ECP5: `TRELLIS_COMB`); LCs: iCE40 logic cells
  (`ICESTORM_LC`, LUT + FF + carry). BRAM: iCE40 4 Kbit / ECP5 18 Kbit blocks.
* fmax: nextpnr's achieved fmax of the accelerator clock; target: the PLL output the build was
  constrained to.
* cycles / image: compute + input/output stream cycles of one image, from the exact cycle model
  (`terwin.sim.cycles`, equal to the RTL's counters). images/s at fmax = fmax / cycles (the UART
  on the board is far slower; this is the accelerator's own rate).
* GOPS counts 2 operations per multiply-accumulate of the dense (uncompressed) network
  (`dense_macs_per_image`) at fmax.
* fmax depends on nextpnr's placement seed and target. ternary-50 on the iCE40 at 40.5 MHz, seed 1:
  48.55 MHz since the writer's `stage_done` is a register set a cycle ahead (docs/hardware.md,
  "Control across the die"); 42.59 MHz with the first registered control events (40.28 with the
  loader's writes registered too; one build before the reset change: 45.96); before them, seeds 1-4: 44.13, 43.76, 45.00,
  44.66 MHz (before the codes memory: 42.96, 44.50, 45.01, 41.38; the
  engine with the global stall: 45.03, 44.08, 43.40, 46.13;
  the first engine without it found no legal placement with seeds 1-3 until its PE products stopped
  using the flip-flops' reset pin, see docs/hardware.md). Each build is
  deterministic: the same model, board, clock and seed give the same bitstream hash. ternary-50-huffman
  on the iCE40 is seed 2's build (41.77 MHz; 38.77 before the registered `stage_done`; before the
  registered control, seeds 1-3: 40.40, 42.00, 39.77 MHz). ternary-50-a4-pe16x8 is seed 2's build
  (44.34 MHz; with the first registered control seed 1 gave 40.43, just under the 40.5 asked). Build times are wall-clock
  seconds on a 2-core machine shared with other work.
* ternary-50: `terwin compress --family ternary --tile-sparsity 0.5` (seed 0); winograd:
  `terwin compress --family winograd` (seed 0). ternary-50-a4-pe16x8: the same recipe pruned for the
  array it runs on at 4-bit activations, `terwin compress --family ternary --tile-sparsity 0.5 --spec
  S` with S = `{"pe_rows": 16, "pe_cols": 8, "act_bits": 4, "out_lanes": 2}` (seed 0), the design
  `terwin explore --board icebreaker` picks (docs/explore.md). ternary-50-a4-pe32x32: the same recipe
  pruned for 32x32 tiles at 4-bit activations (`{"pe_rows": 32, "pe_cols": 32, "act_bits": 4,
  "out_lanes": 32}`, seed 0), retargeted to 16 requantizer lanes and 90 MHz (`dep.retarget(spec)` with
  `out_lanes=16, clock_mhz=90`, saved by `terwin.fileformat.save`; the same weights and scores), built
  with `terwin build --board ulx3s-85f` and verified on all 450 test images: the design `terwin
  explore MODEL --board ulx3s-85f --min-fmax 90 --build --images 450` picks, builds (the same
  bitstream) and verifies (docs/explore.md).
  ternary-50-a4-pe32x32-l32: that model at the 32 lanes it was compressed with (retargeted to 90 MHz
  only), the design `terwin explore --axis pe_rows=32 --axis pe_cols=32 --axis out_lanes=16,32
  --build --images 450` picked (without a clock floor), built and verified: 90 MHz not met (80.3;
  83.1 before the loader's writes and `stage_done` were registered).
  ternary-50-huffman: the ternary-50 model file
  re-encoded with codec huffman (`terwin.codec.with_codec(dep, "huffman")`, written by
  `terwin.fileformat.save`: the same weights and scores, its weight memories Huffman-coded and
  decoded on chip; docs/codecs.md, "Engine integration"). winograd on the iCEBreaker: the winograd
  model file built with `terwin build --spec examples/winograd-icebreaker.json` (`dep.retarget(spec)`:
  the same weights and scores; `spec.mult_lanes` 1, `weight_memory` "loaded", `bank_layout`
  "quarters"): its weight stream lives in 2 of the UP5K's 4 SPRAMs, which the host fills after a
  line break before the first image (`terwin run` does; docs/winograd-hardware.md, "Weights loaded
  at run time"), and each accumulator bank is four quarter memories, so the design takes 26 of the
  30 block RAMs; with its weights in block RAM the 4-lane design needed 109 by the count, and 2
  lanes with loaded weights need 5,852 logic cells of 5,280. winograd-12lanes: the winograd model file
  on `examples/winograd-ecp5-12lanes.json` (its clock aside: `mult_lanes` 12, `requant` "logic", the
  requantizer's multiply in LUTs, so its 12 DSPs are the lane multipliers), seed 6's build: nextpnr
  seeds 1-6 placed it at 89.25, 88.92, 89.11, 89.19, 69.78 and 92.11 MHz (docs/winograd-hardware.md,
  "Twelve lanes"); seed 6's meets issue 16's three ECP5 goals (>= 90 MHz, >= 1.0 GOPS per DSP, >= 10x
  1,332 images/s). resnet8:
  `examples/resnet8.py` (a user's residual network, `terwin compress --family ternary --model
  examples/resnet8.py:resnet8 --data digits32`, 50 % of tiles, seed 0); it needs 6,183 logic cells (6,481 before the codes memory) of
  the UP5K's 5,280, so it has no iCE40 build either.
"""


README_BEGIN, README_END = "<!-- bitstreams table: bitstreams/update.py -->", "<!-- end of bitstreams table -->"


def write_table() -> str:
    rows = []
    for report_path in sorted(HERE.glob("*/*/report.json")):
        report = json.loads(report_path.read_text())
        row = build_row(report)
        row["model"] = report_path.parent.name
        rows.append(row)
    cells = [[_fmt(r[k], 3 if k in ("gops", "gops_per_klut") else 1) for k, _ in COLUMNS] for r in rows]
    extra = []
    for report_path in sorted(HERE.glob("*/*/report.json")):
        r = json.loads(report_path.read_text())
        extra.append(f"* `{report_path.parent.relative_to(HERE)}`: {r['bitstream']} sha256 `{r['bitstream_sha256'][:16]}…`, "
                     f"model `{r.get('model_checksum', '?')[:16]}…`, fits: {_fmt(r['fits'])}, "
                     f"timing met at {r['target_mhz']:g} MHz: {_fmt(r['timing_met'])}, nextpnr seed {r['seed']}, "
                     f"build {r['build_seconds']:.0f} s")
        cp = r.get("critical_path")
        if cp:
            extra.append(f"  critical path {cp['delay_ns']:.2f} ns: `{cp['from']}` → `{cp['to']}`")
    table = markdown_table([h for _, h in COLUMNS], cells)
    text = PREAMBLE + "\n" + table + "\n\n" + "\n".join(extra) + "\n"
    (HERE / "README.md").write_text(text)
    # the project README carries the same table between its markers
    readme = HERE.parent / "README.md"
    top = readme.read_text()
    begin, end = top.index(README_BEGIN) + len(README_BEGIN), top.index(README_END)
    readme.write_text(top[:begin] + "\n" + table + "\n" + top[end:])
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--name", default="ternary-50")
    parser.add_argument("--board", action="append", help="BOARD=MHZ[@SEED] (default: %s)" % " ".join(DEFAULT_TARGETS))
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    if not args.table_only:
        if not args.model:
            parser.error("MODEL is needed unless --table-only")
        dep = fileformat.load(args.model)
        for target in args.board or DEFAULT_TARGETS:
            board, rest = target.split("=")
            mhz, _, seed = rest.partition("@")
            out = HERE / board / args.name
            # force: the folder also holds the model file this script copies there
            build_model(dep, board=board, out_dir=out, clock_mhz=float(mhz), seed=int(seed or 1), force=True)
            if Path(args.model).resolve() != (out / "model.terwin").resolve():
                shutil.copyfile(args.model, out / "model.terwin")
    print(write_table())


if __name__ == "__main__":
    main()
