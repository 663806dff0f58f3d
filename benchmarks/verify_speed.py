"""`terwin verify` speed per simulator, side by side, on the stored reference models.

    python benchmarks/verify_speed.py [--icarus-images 40 10] [--json out.json]

For each stored model (ternary-50, Winograd) it runs the real command, `terwin verify MODEL
--simulator S --json ...` in a fresh build folder, and reads the seconds it reports (design: the
Verilog from the model; build: the simulator's compile; simulate: the images):

* Verilator, `--images all` (450), twice: **cold** (a fresh build folder: Verilator's runtime is
  compiled too, once per folder) and **warm** (the runtime already compiled — by `make setup` for
  the default `.terwin-build`, or by an earlier verify in the folder — the design not: what every
  verify of a new design costs);
* Icarus on `--icarus-images` images per model (450 takes 3 and 9 minutes; `all` to run them), and
  its `--images all` time extrapolated from its images/s.

images/s = images / simulate seconds (both simulators run one process per core). Prints a Markdown
table (README, docs/hardware.md) and the machine (CPU, cores, load average before and after: other
work on the machine slows every figure).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "ternary-50": ROOT / "bitstreams" / "icebreaker" / "ternary-50" / "model.terwin",
    "winograd": ROOT / "bitstreams" / "ulx3s-85f" / "winograd" / "model.terwin",
}
ALL = 450


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}"}


def verify(model: Path, *, simulator: str, images: str, build_dir: Path, out: Path) -> dict:
    cmd = [sys.executable, "-m", "terwin", "verify", str(model), "--images", images, "--simulator", simulator,
           "--build-dir", str(build_dir), "--json", str(out), "--quiet"]
    start = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - start
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
    rep = json.loads(out.read_text())
    sec = rep["seconds"]
    return {"simulator": simulator, "images": rep["images"], "wall_s": round(wall, 1), **{f"{k}_s": v for k, v in sec.items()},
            "images_per_s": round(rep["images"] / sec["simulate"], 2) if sec["simulate"] else None,
            "mismatches": rep["mismatches"], "ok": rep["ok"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--icarus-images", nargs="+", default=["40", "10"],
                    help="images per model under Icarus, in --models order (a number or 'all')")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    report = {"machine": machine(), "load_before": os.getloadavg(), "runs": []}
    work = Path(tempfile.mkdtemp(prefix="terwin-verify-speed-"))
    try:
        root = work / "build"
        for i, name in enumerate(args.models):
            model = MODELS[name]
            runs = []
            if i == 0:   # cold: a fresh build folder, Verilator's runtime compiled too
                runs.append(dict(verify(model, simulator="verilator", images="all", build_dir=root,
                                        out=work / "v.json"), case="cold"))
                for d in root.glob("verilator-*"):   # keep the runtime, drop the design's build
                    if d.name != "verilator-runtime":
                        shutil.rmtree(d)
            runs.append(dict(verify(model, simulator="verilator", images="all", build_dir=root, out=work / "v.json"),
                             case="warm"))
            n = args.icarus_images[min(i, len(args.icarus_images) - 1)]
            ic = dict(verify(model, simulator="icarus", images=n, build_dir=root, out=work / "i.json"), case="")
            ic["all_wall_s"] = (round(ic["design_s"] + ic["build_s"] + ALL / ic["images_per_s"], 1)
                                if ic["images"] != ALL else ic["wall_s"])
            runs.append(ic)
            for r in runs:
                r["model"] = name
                r["speedup"] = round(r["images_per_s"] / ic["images_per_s"], 1)
                print(json.dumps(r), flush=True)
            report["runs"] += runs
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["load_after"] = os.getloadavg()
    m = report["machine"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}; load average "
          f"{report['load_before'][0]:.1f} before, {report['load_after'][0]:.1f} after\n")
    print(table(report["runs"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def table(runs: list[dict]) -> str:
    lines = ["| model | simulator | images | design (s) | compile (s) | simulate (s) | images/s | vs Icarus | "
             "`--images all` wall (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        sim = r["simulator"] + (f" ({r['case']})" if r["case"] else "")
        total = r.get("all_wall_s", r["wall_s"])
        extrapolated = " (extrapolated)" if r["simulator"] == "icarus" and r["images"] != ALL else ""
        lines.append(f"| {r['model']} | {sim} | {r['images']} | {r['design_s']:.1f} | {r['build_s']:.1f} | "
                     f"{r['simulate_s']:.1f} | {r['images_per_s']:.1f} | {r['speedup']:.0f}x | {total:.0f}{extrapolated} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
