"""Mutation benchmark: can `terwin verify --rtl` be fooled by a one-point change in the generated Verilog?

    python benchmarks/mutation.py [--models ternary-50 winograd] [--mutants 48] [--images 4] [--seed 0]
                                  [--simulator verilator] [--json out.json]

For each stored reference model (`bitstreams/.../model.terwin`) it generates the engine's Verilog
(`terwin.sim.rtl.to_verilog`), lists every single-point mutation site of these kinds, and draws
`--mutants` of them (seeded, spread over the kinds; every counter site kind at least once):

* `operator`   + <-> -, & <-> |, ^ -> |, << <-> >>, unary -, ~ or ! dropped, reduction | <-> &
* `comparison` == <-> !=, < <-> <=, > <-> >=
* `constant`   a sized literal + 1 or - 1
* `slice`      [hi:lo] -> [hi-1:lo] on a right-hand side (the top bit dropped)
* `mux`        c ? a : b -> c ? b : a
* `enable`     if (cond) of a register stuck at 1'h1 or 1'h0
* `counter`    any of the above on a statement that reaches only the cycle counters (a counter
               register, its enable or increment, the read-out multiplexers: `counter_only`), and
               the freezes: a stage counter keeps its value, `cycles` keeps its value, `layer_cycles`
               and `layer_mac_cycles` swapped

Each mutant runs through `terwin verify MODEL --rtl MUTANT.v --images N` in its own process (the
bench's watchdog on; a wall-clock limit on the process as the last resort), and is **killed** (exit
1: a score, a counter, the protocol or the watchdog), **survived** (exit 0), **invalid** (exit 2:
the simulator refused it) or **hung** (the process ran past its limit). A survivor is run again on
all 450 test images with heavier back-pressure (0.5) and another seed; one that still passes is
printed with its line, for a person to judge whether it is equivalent (e.g. a bit that is never
read, a constant no input can reach). Prints a Markdown table (docs/hardware.md) and writes JSON.
Takes ~10 minutes per 48 mutants of the ternary model and ~20 of the Winograd model on 2 cores
with Verilator.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "ternary-50": ROOT / "bitstreams" / "icebreaker" / "ternary-50" / "model.terwin",
    "winograd": ROOT / "bitstreams" / "ulx3s-85f" / "winograd" / "model.terwin",
}
ATTR = re.compile(r"\(\* [^*]*\*\) ")
COUNTER_PORTS = ("cycles", "layer_cycles", "layer_mac_cycles")
KINDS = ("operator", "comparison", "constant", "slice", "mux", "enable", "counter")


@dataclass
class Mutant:
    kind: str
    line: int            # 1-based, in the generated Verilog
    original: str        # the line without its attributes
    mutated: str
    counter: bool
    raw: str = ""        # the mutated line as written (attributes kept)

    def apply(self, lines: list[str]) -> str:
        out = list(lines)
        out[self.line - 1] = self.raw
        return "\n".join(out) + "\n"


def _clean(line: str) -> str:
    return ATTR.sub("", line).strip()


def _spans_outside_attrs(line: str):
    """The (start, end) spans of `line` that are not inside a (* ... *) attribute."""
    spans, pos = [], 0
    for m in ATTR.finditer(line):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(line)))
    return spans


def _subs(line: str, pattern: str, repl, start: int = 0):
    """Every single replacement of `pattern` in `line` (after `start`, outside attributes)."""
    for a, b in _spans_outside_attrs(line):
        for m in re.finditer(pattern, line[a:b]):
            s, e = a + m.start(), a + m.end()
            if s < start:
                continue
            r = repl(m) if callable(repl) else repl
            if r is not None and r != m.group(0):
                yield line[:s] + r + line[e:]


BINARY = [(r" \+ ", " - "), (r" - (?=\S)", " + "), (r" & ", " | "), (r" \| ", " & "), (r" \^ ", " | "),
          (r" << ", " >> "), (r" >> ", " << "), (r" >>> ", " >> ")]
COMPARE = [(r" == ", " != "), (r" != ", " == "), (r" < ", " <= "), (r" <= ", " < "), (r" > ", " >= "),
           (r" >= ", " > ")]
UNARY = [(r"= - ", "= "), (r"~ ", ""), (r"! ", ""), (r"= \| \{", "= & {"), (r"= & \{", "= | {")]


def _constant(m, delta):
    width, base, digits = int(m.group(1)), m.group(2), m.group(3).replace("_", "")
    if not re.fullmatch(r"[0-9a-fA-F]+", digits):
        return None
    value = int(digits, {"h": 16, "d": 10, "b": 2}[base])
    new = (value + delta) % (1 << width)
    return f"{width}'{base}" + {"h": f"{new:x}", "d": f"{new}", "b": f"{new:b}"}[base]


IDENT = re.compile(r"\\\S+|(?<![\w'$])[A-Za-z_][\w$]*")
KEYWORDS = {"assign", "if", "else", "begin", "end", "always", "posedge", "negedge", "signed", "case", "endcase",
            "default", "initial", "reg", "wire"}
COUNTER_REG = re.compile(r"^(\\counters\.stage_(cycles|macs)\d+|cycles|layer_cycles|layer_mac_cycles)$")


def _names(code: str) -> set[str]:
    return {n for n in IDENT.findall(code) if n not in KEYWORDS}


def counter_only(lines: list[str]) -> set[int]:
    """Line numbers (1-based) whose statement can reach nothing but the cycle counters and their ports:
    the counter registers' own statements, and the nets that only they read (transitively)."""
    writes, reads = {}, {}   # line -> names written / read
    pending_if = set()
    for n, line in enumerate(lines, 1):
        code = _clean(line)
        if code.startswith(("reg ", "wire ", "input ", "output ", "(*", "module", "endmodule")):
            continue
        m = re.match(r"assign (.+?) = (.+);$", code)
        if m:
            writes[n], reads[n] = _names(m.group(1)), _names(m.group(2))
            continue
        m = re.match(r"(?:else\s+)?(?:if \((.+?)\)\s*)?(.+?)\s*<=\s*(.+);$", code)
        if m:
            lhs = m.group(2)
            target = _names(lhs.split("[")[0])
            writes[n] = target
            reads[n] = _names(m.group(1) or "") | _names(m.group(3)) | _names(lhs[len(lhs.split("[")[0]):]) | pending_if
            continue
        m = re.match(r"(?:else\s+)?if \((.+?)\)( begin)?$", code)
        pending_if = _names(m.group(1)) if m else (pending_if if code in ("begin", "end", "else") else set())
    readers = {}
    for n, names in reads.items():
        for name in names:
            readers.setdefault(name, set()).add(n)
    only = {n for n, w in writes.items() if w and all(COUNTER_REG.match(x) for x in w)}
    changed = True
    while changed:
        changed = False
        for n, w in writes.items():
            if n in only or not w:
                continue
            users = set().union(*(readers.get(x, set()) for x in w))
            if users and users <= only and not any(x in ("busy", "o_stream__payload", "o_stream__valid",
                                                          "i_stream__ready") for x in w):
                only.add(n)
                changed = True
    return only


def sites(text: str) -> list[Mutant]:
    """Every single-point mutation of the module's statements (declarations and initial values are left alone)."""
    lines = text.splitlines()
    counters = counter_only(lines)
    out = []
    in_initial = False
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if s.startswith("initial"):
            in_initial = True
        if in_initial:
            if s == "end":
                in_initial = False
            continue
        is_assign = s.startswith("assign ")
        is_nba = "<=" in s and not is_assign and not s.startswith(("reg ", "wire ", "input ", "output "))
        is_if = re.search(r"\bif \(", s) is not None and not s.startswith(("reg ", "wire "))
        if not (is_assign or is_nba or is_if):
            continue
        counter = n in counters
        eq = line.index("=") + 1 if is_assign else (line.index("<=") + 2 if is_nba else 0)
        cands = []
        if is_assign or is_nba:
            for pat, rep in BINARY + UNARY:
                cands += [("operator", r) for r in _subs(line, pat, rep, eq)]
            if is_assign:
                for pat, rep in COMPARE:
                    cands += [("comparison", r) for r in _subs(line, pat, rep, eq)]
            for delta in (1, -1):
                cands += [("constant", r) for r in _subs(line, r"(\d+)'([hdb])([0-9a-fA-F_]+)",
                                                           lambda m, d=delta: _constant(m, d), eq)]
            cands += [("slice", r) for r in _subs(line, r"\[(\d+):(\d+)\]",
                                                 lambda m: f"[{int(m.group(1)) - 1}:{m.group(2)}]"
                                                 if int(m.group(1)) > int(m.group(2)) else None, eq)]
            mux = re.match(r"^(\s*assign\s+.+?=\s*)(.+?) \? ((?:\(\* [^*]*\*\) )?)(.+) : (.+);$", line)
            if is_assign and mux and mux.group(4).count(" ? ") == 0 and mux.group(5).count(" ? ") == 0:
                cands.append(("mux", f"{mux.group(1)}{mux.group(2)} ? {mux.group(3)}{mux.group(5)} : {mux.group(4)};"))
        if is_if:
            m = re.search(r"\bif \((.+?)\) ", line)
            if m and m.group(1).strip() not in ("rst", "1'h1", "1'h0"):
                for stuck in ("1'h1", "1'h0"):
                    cands.append(("enable", line[:m.start(1)] + stuck + line[m.end(1):]))
        for kind, raw in cands:
            out.append(Mutant(kind="counter" if counter else kind, line=n, original=_clean(line),
                              mutated=_clean(raw), counter=counter, raw=raw))
        if is_nba and counter:   # freeze the register where it counts: it keeps its value
            reg = re.match(r"\s*(?:else\s+)?(?:if \(.+?\)\s+)?(\\?\S+)\s+<=\s*(.+);", line)
            if reg and not re.fullmatch(r"\d+'[hdb][0-9a-fA-F_]+", reg.group(2).strip()):
                raw = line[:line.index("<=") + 2] + f" {reg.group(1)} ;"
                out.append(Mutant("counter", n, _clean(line), _clean(raw) + "   // frozen", True, raw))
    # layer_cycles and layer_mac_cycles swapped (the two read-out chains)
    heads = {p: next((i for i, ln in enumerate(lines) if re.match(rf"\s*assign {p} = ", ln)), None)
             for p in ("layer_cycles", "layer_mac_cycles")}
    if None not in heads.values():
        a, b = lines[heads["layer_cycles"]], lines[heads["layer_mac_cycles"]]
        out.append(Mutant("counter", heads["layer_cycles"] + 1, _clean(a),
                          _clean(a.replace("assign layer_cycles", "assign layer_mac_cycles__swapped", 1)) + "   // swapped",
                          True, a.replace("assign layer_cycles = ", "assign layer_cycles = layer_mac_cycles; // ", 1)))
    return out


def draw(all_sites: list[Mutant], n: int, seed: int) -> list[Mutant]:
    """`n` mutants spread over the kinds (round-robin over shuffled pools), the counter kind first."""
    rng = random.Random(seed)
    pools = {k: [m for m in all_sites if m.kind == k] for k in KINDS}
    for pool in pools.values():
        rng.shuffle(pool)
    freezes = [m for m in pools["counter"] if m.mutated.endswith(("// frozen", "// swapped"))]
    chosen = freezes[:4]
    used = {(m.line, m.raw) for m in chosen}
    while len(chosen) < n and any(pools.values()):
        for k in KINDS:
            while pools[k] and (pools[k][-1].line, pools[k][-1].raw) in used:
                pools[k].pop()
            if pools[k] and len(chosen) < n:
                m = pools[k].pop()
                chosen.append(m)
                used.add((m.line, m.raw))
    return chosen


def run_verify(model: Path, rtl: Path, *, images: str, simulator: str, build_dir: Path, seed: int,
               backpressure: float, limit_s: float) -> dict:
    out = rtl.with_suffix(".json")
    cmd = [sys.executable, "-m", "terwin", "verify", str(model), "--rtl", str(rtl), "--images", images,
           "--simulator", simulator, "--build-dir", str(build_dir), "--json", str(out), "--quiet", "--jobs", "1",
           "--seed", str(seed), "--backpressure", str(backpressure)]
    start = time.monotonic()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired:
        return {"status": "hung", "seconds": limit_s}
    seconds = time.monotonic() - start
    status = {0: "survived", 1: "killed", 2: "invalid"}.get(run.returncode, f"exit {run.returncode}")
    how = ""
    if run.returncode == 1:
        lines = [ln for ln in run.stdout.splitlines() if ln.startswith(("MISMATCH", "CYCLES", "PROTOCOL", "TIMEOUT"))]
        how = lines[0].split()[0].rstrip(":") if lines else "?"
    elif run.returncode not in (0,):
        how = (run.stderr.strip().splitlines() or [""])[-1][:160]
    return {"status": status, "how": how, "seconds": round(seconds, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--mutants", type=int, default=48)
    ap.add_argument("--images", default="4")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--simulator", default="verilator")
    ap.add_argument("--json", default=None)
    ap.add_argument("--work", default=None, help="folder for the mutants and builds (default: a temporary one)")
    args = ap.parse_args(argv)

    from terwin import fileformat
    from terwin.sim import rtl

    work = Path(args.work or tempfile.mkdtemp(prefix="terwin-mutation-"))
    report = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpus": len(
        __import__("os").sched_getaffinity(0)), "simulator": args.simulator, "images": args.images,
        "seed": args.seed, "models": {}}
    for name in args.models:
        model = MODELS[name]
        dep = fileformat.load(model)
        text = rtl.to_verilog(dep)
        lines = text.splitlines()
        found = sites(text)
        chosen = draw(found, args.mutants, args.seed)
        print(f"== {name}: {len(found)} sites, {len(chosen)} mutants", flush=True)
        rows = []
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(chosen):
            path = folder / f"mutant{i:03d}.v"
            path.write_text(m.apply(lines))
            res = run_verify(model, path, images=args.images, simulator=args.simulator, build_dir=work / "build",
                             seed=args.seed, backpressure=0.2, limit_s=900)
            if res["status"] == "survived":
                again = run_verify(model, path, images="all", simulator=args.simulator, build_dir=work / "build",
                                   seed=args.seed + 1, backpressure=0.5, limit_s=1800)
                res["all_images"] = again
                if again["status"] == "killed":
                    res["status"], res["how"] = "killed", again["how"] + " (all images)"
            path.unlink(missing_ok=True)   # the mutants are re-created from the seed; builds stay cached
            row = {"index": i, **asdict(m), **res}
            row.pop("raw")
            rows.append(row)
            print(f"  {i:3d} {m.kind:<10} line {m.line:<6} {res['status']:<9} {res.get('how', ''):<22} "
                  f"{res['seconds']:>6}s  {m.mutated[:90]}", flush=True)
        report["models"][name] = {"sites": len(found), "mutants": rows}
    print()
    print(table(report))
    for name, r in report["models"].items():
        for row in r["mutants"]:
            if row["status"] != "killed":
                print(f"{name} mutant {row['index']} ({row['kind']}, line {row['line']}) {row['status']}:\n"
                      f"    was: {row['original'][:200]}\n    now: {row['mutated'][:200]}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def table(report: dict) -> str:
    lines = ["| model | mutants | killed | survived | invalid | hung | counter mutants killed | killed by (mismatch / cycles / protocol / timeout) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in report["models"].items():
        rows = r["mutants"]
        count = {s: sum(1 for x in rows if x["status"] == s) for s in ("killed", "survived", "invalid", "hung")}
        counters = [x for x in rows if x["counter"]]
        by = {k: sum(1 for x in rows if x["status"] == "killed" and x["how"].startswith(k))
              for k in ("MISMATCH", "CYCLES", "PROTOCOL", "TIMEOUT")}
        lines.append(f"| {name} | {len(rows)} | {count['killed']} | {count['survived']} | {count['invalid']} | "
                     f"{count['hung']} | {sum(1 for x in counters if x['status'] == 'killed')} / {len(counters)} | "
                     f"{by['MISMATCH']} / {by['CYCLES']} / {by['PROTOCOL']} / {by['TIMEOUT']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
