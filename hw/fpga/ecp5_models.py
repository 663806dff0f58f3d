"""Simulation models of the ECP5 cells for netlist simulation (`terwin verify --netlist ecp5`).

Yosys ships the block RAM `DP16KD` only as a black box and the multiplier `MULT18X18D` not at all;
these are behavioural models of both for the configurations Yosys's mapping produces for terwin's
tops (the full account is in `terwin.sim.netlist`'s docstring). Text processing only: no Amaranth.
"""
from __future__ import annotations

import re
from pathlib import Path

from terwin.errors import TerwinError


def cell_models(share: Path) -> str:
    """One Verilog text with every cell model an ECP5 netlist needs: Yosys's `share/ecp5/cells_sim.v`
    with its includes inlined, and behavioural models of the DP16KD block RAM and the MULT18X18D
    multiplier, which Yosys ships only as black boxes (see `terwin.sim.netlist`)."""
    folder = share / "ecp5"
    text = _inline_includes((folder / "cells_sim.v").read_text(), folder, set())
    # an elaboration-time $error in a generate branch (SystemVerilog) that Icarus cannot parse
    text = text.replace('$error("unsupported COMB mode %s", MODE);',
                        'initial $fatal(1, "unsupported COMB mode %s", MODE);')
    # the DP16KD black box becomes a model (its declarations kept as Yosys has them); MULT18X18D's
    # declarations come from the black-box library
    dp = _module(text, "DP16KD")
    text = text.replace(dp, _DP16KD_MARK)
    model = _with_body(dp.replace("(* blackbox *)\n", ""), _dp16kd_body(dp))
    mult = _module((folder / "cells_bb.v").read_text(), "MULT18X18D")
    mult = _with_body(mult.replace("(* blackbox *)\n", ""), _MULT18X18D_BODY)
    return (text.replace(_DP16KD_MARK, "// DP16KD: terwin's model below\n")
            + "\n// ---- terwin: behavioural models of the ECP5 cells Yosys ships only as black boxes ----\n"
            + model + "\n" + mult + "\n")


_DP16KD_MARK = "/*terwin-dp16kd*/"


def _inline_includes(text: str, folder: Path, seen: set) -> str:
    """`text` with each `include of `folder` replaced by the file, each file once (Yosys's ECP5 library
    includes cells_ff.vh and cells_io.vh twice: fine for Yosys's -lib reader, not for a simulator)."""
    def one(m):
        name = m.group(1)
        if name in seen:
            return f"// {name}: included above\n"
        seen.add(name)
        return _inline_includes((folder / name).read_text(), folder, seen)
    return re.sub(r'^\s*`include "([^"]+)"\s*$', one, text, flags=re.M)


def _module(text: str, name: str) -> str:
    m = re.search(r"(\(\* blackbox \*\)\n)?module " + name + r"\b.*?^endmodule", text, re.S | re.M)
    if m is None:
        raise TerwinError(f"no module {name} in Yosys's ECP5 cell library")
    return m.group(0)


def _with_body(module: str, body: str) -> str:
    assert module.endswith("endmodule")
    return module[: -len("endmodule")] + body + "endmodule\n"


def _bus(prefix: str, n: int) -> str:
    return "{" + ", ".join(f"{prefix}{i}" for i in range(n - 1, -1, -1)) + "}"


def _dp16kd_body(decl: str) -> str:
    initvals = re.findall(r"parameter (INITVAL_[0-9A-F]{2})\b", decl)
    assert len(initvals) == 64, "DP16KD: expected INITVAL_00 .. INITVAL_3F"
    cases = "\n".join(f"      {i}: initval = {name};" for i, name in enumerate(initvals))
    return f"""
  // ---- terwin's behavioural model (hw/fpga/ecp5_models.py): 1024 words of two 9-bit bytes ----
  reg [17:0] mem [0:1023];
  wire [13:0] ada = {_bus("ADA", 14)};
  wire [13:0] adb = {_bus("ADB", 14)};
  wire [17:0] dia = {_bus("DIA", 18)};
  wire [17:0] dib = {_bus("DIB", 18)};
  reg [17:0] doa = 18'd0, dob = 18'd0;
  assign {_bus("DOA", 18)} = doa;
  assign {_bus("DOB", 18)} = dob;
  wire clka = CLKA ^ (CLKAMUX == "INV");
  wire clkb = CLKB ^ (CLKBMUX == "INV");
  wire sela = {{CSA2, CSA1, CSA0}} == csdecode(CSDECODE_A);
  wire selb = {{CSB2, CSB1, CSB0}} == csdecode(CSDECODE_B);

  function [2:0] csdecode(input [8*5-1:0] s);  // "0b101" -> 3'b101
    csdecode = {{s[23:16] == "1", s[15:8] == "1", s[7:0] == "1"}};
  endfunction

  function [319:0] initval(input integer i);
    case (i)
{cases}
      default: initval = 320'd0;
    endcase
  endfunction

  // a 9-bit datum is byte a[3] of its 18-bit word
  function [17:0] narrow(input integer width, input [13:0] a, input [17:0] word);
    if (width >= 18) narrow = word;
    else narrow = a[3] ? {{9'd0, word[17:9]}} : {{9'd0, word[8:0]}};
  endfunction

  // the word at a[13:4] after writing d (x18: the bytes a[1:0] enable; x9: byte a[3])
  function [17:0] merged(input integer width, input [13:0] a, input [17:0] d, input [17:0] word);
    reg [17:0] mask;
    begin
      if (width >= 18) mask = {{{{9{{a[1]}}}}, {{9{{a[0]}}}}}};
      else mask = a[3] ? {{9'h1ff, 9'h000}} : {{9'h000, 9'h1ff}};
      merged = (word & ~mask) | ((width >= 18 ? d : {{d[8:0], d[8:0]}}) & mask);
    end
  endfunction

  integer i, j;
  reg [319:0] row;
  initial begin
    if (REGMODE_A != "NOREG" || REGMODE_B != "NOREG")
      $fatal(1, "DP16KD %m: output registers (REGMODE OUTREG) are not modelled");
    if (!(DATA_WIDTH_A == 9 || DATA_WIDTH_A == 18 || DATA_WIDTH_A == 36)
        || !(DATA_WIDTH_B == 9 || DATA_WIDTH_B == 18 || DATA_WIDTH_B == 36))
      $fatal(1, "DP16KD %m: data widths %0d/%0d are not modelled (9, 18 and 36 are)", DATA_WIDTH_A, DATA_WIDTH_B);
    if (INIT_DATA != "STATIC") $fatal(1, "DP16KD %m: INIT_DATA %s is not modelled", INIT_DATA);
    for (i = 0; i < 64; i = i + 1) begin
      row = initval(i);
      for (j = 0; j < 16; j = j + 1) mem[i * 16 + j] = row[j * 20 +: 18];
    end
  end

  // Writes land after the clock edge (non-blocking), so a read at the same edge, on either port,
  // returns the old word: READBEFOREWRITE on its own port, and a defined value across ports.
  reg [17:0] wa, wb;
  // port A: read/write at DATA_WIDTH_A, or the write half of the pseudo dual-port x36
  always @(posedge clka) begin
    if (RESETMODE == "SYNC" && RSTA) doa <= 18'd0;
    else if (CEA && sela) begin
      if (DATA_WIDTH_A == 36) begin
        if (WEA) begin
          mem[{{ada[13:5], 1'b0}}] <= merged(18, {{12'd0, ada[1:0]}}, dia, mem[{{ada[13:5], 1'b0}}]);
          mem[{{ada[13:5], 1'b1}}] <= merged(18, {{12'd0, ada[3:2]}}, dib, mem[{{ada[13:5], 1'b1}}]);
        end
      end else if (WEA) begin
        wa = merged(DATA_WIDTH_A, ada, dia, mem[ada[13:4]]);
        mem[ada[13:4]] <= wa;
        if (WRITEMODE_A == "READBEFOREWRITE") doa <= narrow(DATA_WIDTH_A, ada, mem[ada[13:4]]);
        else if (WRITEMODE_A == "WRITETHROUGH") doa <= narrow(DATA_WIDTH_A, ada, wa);
      end else doa <= narrow(DATA_WIDTH_A, ada, mem[ada[13:4]]);
    end
  end

  // port B: read/write at DATA_WIDTH_B, or the read half of the pseudo dual-port x36 ({{DOB, DOA}})
  always @(posedge clkb) begin
    if (RESETMODE == "SYNC" && RSTB) begin
      dob <= 18'd0;
      if (DATA_WIDTH_B == 36) doa <= 18'd0;
    end else if (CEB && selb) begin
      if (DATA_WIDTH_B == 36) begin
        doa <= mem[{{adb[13:5], 1'b0}}];
        dob <= mem[{{adb[13:5], 1'b1}}];
      end else if (WEB && DATA_WIDTH_A != 36) begin
        wb = merged(DATA_WIDTH_B, adb, dib, mem[adb[13:4]]);
        mem[adb[13:4]] <= wb;
        if (WRITEMODE_B == "READBEFOREWRITE") dob <= narrow(DATA_WIDTH_B, adb, mem[adb[13:4]]);
        else if (WRITEMODE_B == "WRITETHROUGH") dob <= narrow(DATA_WIDTH_B, adb, wb);
      end else dob <= narrow(DATA_WIDTH_B, adb, mem[adb[13:4]]);
    end
  end

  // asynchronous reset of the outputs
  always @(posedge RSTA) if (RESETMODE == "ASYNC") doa <= 18'd0;
  always @(posedge RSTB) if (RESETMODE == "ASYNC") begin
    dob <= 18'd0;
    if (DATA_WIDTH_B == 36) doa <= 18'd0;
  end
"""


_MULT18X18D_BODY = f"""
  // ---- terwin's behavioural model (hw/fpga/ecp5_models.py): the combinational multiplier Yosys maps to ----
  initial begin
    if (REG_INPUTA_CLK != "NONE" || REG_INPUTB_CLK != "NONE" || REG_INPUTC_CLK != "NONE"
        || REG_PIPELINE_CLK != "NONE" || REG_OUTPUT_CLK != "NONE")
      $fatal(1, "MULT18X18D %m: input, pipeline or output registers are not modelled");
    if (MULT_BYPASS != "DISABLED") $fatal(1, "MULT18X18D %m: MULT_BYPASS is not modelled");
  end
  wire [17:0] a = {_bus("A", 18)};
  wire [17:0] b = {_bus("B", 18)};
  wire signed [18:0] sa = {{SIGNEDA & a[17], a}};
  wire signed [18:0] sb = {{SIGNEDB & b[17], b}};
  wire signed [37:0] p = sa * sb;
  assign {_bus("P", 36)} = p[35:0];
  assign SIGNEDP = SIGNEDA | SIGNEDB;
  assign {_bus("ROA", 18)} = a;
  assign {_bus("ROB", 18)} = b;
  assign {_bus("ROC", 18)} = {_bus("C", 18)};
  assign {_bus("SROA", 18)} = 18'd0;
  assign {_bus("SROB", 18)} = 18'd0;
"""
