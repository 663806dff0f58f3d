"""`terwin report DIR`: one readable report of a demo (or single model) folder.

Reads whatever the other commands left there, per model folder (DIR itself and its sub-folders):
`compress.json`, `verify.json`, `simulate.json`, `model.terwin`, `report.json` / `build-*/report.json`,
and writes

* `DIR/report.html`: self-contained, the plots embedded as base64 PNG;
* `DIR/report.md` with the plots beside it in `DIR/report_files/`,

all at once, and never over a file terwin did not write there (`terwin.outdir`).

Plots: accuracy vs sparsity, per-layer cycles vs the ideal (PE utilisation), tile-mask heatmaps,
resources and fmax per board. Whatever is missing is listed in the report, never an error.
"""
from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import engines, fileformat, safeio
from .errors import TerwinError
from .outdir import OutputFolder
from .sim import cycles
from .stats import model_stats

REPORT_FILES = "report_files"
ARTIFACTS = ("compress.json", "verify.json", "simulate.json", "model.terwin")


@dataclass
class ModelRun:
    """What one model folder holds."""
    name: str
    path: Path
    compress: dict | None = None
    verify: dict | None = None
    simulate: dict | None = None
    builds: list[dict] = field(default_factory=list)
    deployment: object | None = None
    problems: list[str] = field(default_factory=list)
    simulate_derived: bool = False  # simulate figures computed from model.terwin, not read from simulate.json

    @property
    def family(self) -> str:
        """The model's engine (= compression family, `terwin.engines`): the model file's, else what
        compress.json or simulate.json recorded; "?" when nothing says."""
        if self.deployment is not None:
            return engines.for_spec(self.deployment.spec).name
        for src, key in ((self.compress, "family"), (self.simulate, "engine")):
            if src and isinstance(src.get(key), str):
                return src[key]
        return "?"


def _read_json(path: Path, problems: list[str]):
    try:
        data = safeio.load_json(path, what="JSON file")
    except TerwinError as e:  # unreadable, not a regular file, too large, not UTF-8 or not JSON
        problems.append(str(e))
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name}: not a JSON object")
        return None
    return data


def _is_model_dir(path: Path) -> bool:
    return any((path / name).exists() for name in ARTIFACTS) or (path / "report.json").exists() \
        or any(path.glob("build-*/report.json"))


def collect(root) -> list[ModelRun]:
    root = Path(root)
    if not root.is_dir():
        raise TerwinError(f"{root}: not a folder")
    dirs = [root] if _is_model_dir(root) else []
    dirs += [d for d in sorted(root.iterdir()) if d.is_dir() and d.name != REPORT_FILES and _is_model_dir(d)]
    runs = []
    for d in dirs:
        run = ModelRun(name=d.name if d != root else (root.name or "."), path=d)
        for attr in ("compress", "verify", "simulate"):
            p = d / f"{attr}.json"
            if p.exists():
                setattr(run, attr, _read_json(p, run.problems))
        build_reports = sorted(d.glob("build-*/report.json"))
        if (d / "report.json").exists():
            build_reports.insert(0, d / "report.json")
        for p in build_reports:
            data = _read_json(p, run.problems)
            if data is not None and "board" in data:
                data["_path"] = str(p.relative_to(root))
                run.builds.append(data)
        if (d / "model.terwin").exists():
            try:
                run.deployment = fileformat.load(d / "model.terwin")
            except TerwinError as e:
                run.problems.append(f"model.terwin: {e}")
        if run.simulate is None and run.deployment is not None:  # the cycle model is cheap: run it here
            try:
                run.simulate = cycles.predict(run.deployment)
                run.simulate_derived = True
            except TerwinError as e:
                run.problems.append(f"cycle model: {e}")
        runs.append(run)
    return runs


# -- figures ---------------------------------------------------------------------------------------

def _figure(width=6.4, height=3.6):
    fig = Figure(figsize=(width, height), dpi=110)  # no pyplot: no global figure or backend state
    ax = fig.subplots()
    return fig, ax


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _sparsity_of(run: ModelRun):
    """(what the sparsity counts, e.g. "tile_sparsity", and its value) from compress.json's common
    keys `sparsity` and `sparsity_measure`, the same for every family."""
    c = run.compress or {}
    if isinstance(c.get("sparsity"), (int, float)) and not isinstance(c["sparsity"], bool):
        measure = c.get("sparsity_measure")
        return (measure if isinstance(measure, str) else "sparsity"), float(c["sparsity"])
    return None, None


def plot_accuracy(runs: list[ModelRun]) -> bytes | None:
    points = []
    for run in runs:
        c = run.compress or {}
        key, sparsity = _sparsity_of(run)
        if sparsity is None or not isinstance(c.get("accuracy"), (int, float)):
            continue
        points.append((run.family, sparsity, 100 * c["accuracy"], c.get("float_accuracy"), run.name, key))
    if not points:
        return None
    fig, ax = _figure()
    for family in sorted({p[0] for p in points}):
        pts = sorted(p for p in points if p[0] == family)
        marker, color = engines.ENGINES[family].plot_style if family in engines.ENGINES else ("^", "tab:green")
        label = f"{family} ({pts[0][5].replace('_', ' ')})"
        ax.plot([p[1] * 100 for p in pts], [p[2] for p in pts], marker=marker, color=color, label=label)
        for p in pts:
            ax.annotate(p[4], (p[1] * 100, p[2]), textcoords="offset points", xytext=(4, -12), fontsize=7)
        floats = [100 * p[3] for p in pts if isinstance(p[3], (int, float))]
        if floats:  # the float baseline of this family (mean over its runs)
            ax.axhline(sum(floats) / len(floats), color=color, linestyle="--", linewidth=1,
                       label=f"{family} float model")
    ax.margins(x=0.12, y=0.15)
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("integer model test accuracy (%)")
    n_test = {(r.compress or {}).get("test_images") for r in runs} - {None}
    ax.set_title("Accuracy vs sparsity" + (f" ({n_test.pop()} test images)" if len(n_test) == 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def _layers_of(run: ModelRun):
    for src in (run.simulate, run.verify):
        if src and isinstance(src.get("layers"), list):
            layers = [l for l in src["layers"] if isinstance(l, dict) and l.get("ideal_mac_cycles")]
            if layers:
                return layers
    return None


def plot_cycles(run: ModelRun) -> bytes | None:
    layers = _layers_of(run)
    if not layers:
        return None
    fig, ax = _figure()
    x = np.arange(len(layers))
    w = 0.27
    ax.bar(x - w, [l["cycles"] for l in layers], w, label="cycles (all)", color="tab:grey")
    ax.bar(x, [l["mac_cycles"] for l in layers], w, label="MAC cycles", color="tab:blue")
    ax.bar(x + w, [l["ideal_mac_cycles"] for l in layers], w, label="ideal (nonzero MACs / PEs)", color="tab:green")
    for i, l in enumerate(layers):
        util = l["ideal_mac_cycles"] / l["mac_cycles"] if l["mac_cycles"] else 0
        ax.annotate(f"{100 * util:.0f}%", (i, l["mac_cycles"]), textcoords="offset points", xytext=(0, 3),
                    ha="center", fontsize=7)
    ax.set_xticks(x, [l["name"] for l in layers])
    ax.set_ylabel("cycles per image")
    ax.set_title(f"{run.name}: per-layer cycles vs ideal (labels: PE utilisation)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_tile_masks(run: ModelRun) -> bytes | None:
    dep = run.deployment
    if dep is None:
        return None
    layers = [l for l in dep.weighted_layers if getattr(l, "tile_mask", None) is not None]
    if not layers:
        return None
    fig = Figure(figsize=(2.6 * len(layers), 2.9), dpi=110)
    axes = fig.subplots(1, len(layers), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        mask = layer.tile_mask
        og, tg, cg = mask.shape
        ax.imshow(mask.reshape(og, tg * cg), cmap="Blues", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_title(f"{layer.name}: {int(mask.sum())}/{mask.size} kept", fontsize=8)
        ax.set_xlabel(f"tap group x channel group ({tg}x{cg})", fontsize=7)
        ax.set_ylabel(f"output group ({og})", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"{run.name}: PE tile masks (dark = kept, white = pruned and skipped)", fontsize=9)
    return _png(fig)


RESOURCE_KEYS = (("luts", "LUTs"), ("ffs", "FFs"), ("brams", "BRAMs"), ("dsps", "DSPs"))
CAPACITY_CELLS = {"luts": ("ICESTORM_LC", "TRELLIS_COMB"), "ffs": ("ICESTORM_LC", "TRELLIS_FF"),
                  "brams": ("ICESTORM_RAM", "DP16KD"), "dsps": ("ICESTORM_DSP", "MULT18X18D")}


def _capacity(build: dict, key: str):
    util = build.get("utilization", {})
    for cell in CAPACITY_CELLS[key]:
        if cell in util:
            return util[cell].get("available")
    return None


def plot_resources(builds: list[tuple[str, dict]]) -> bytes | None:
    if not builds:
        return None
    fig = Figure(figsize=(9, 3.6), dpi=110)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    x = np.arange(len(RESOURCE_KEYS))
    w = 0.8 / len(builds)
    for i, (label, b) in enumerate(builds):
        pct = []
        for key, _ in RESOURCE_KEYS:
            cap = _capacity(b, key)
            pct.append(100 * b.get(key, 0) / cap if cap else 0)
        bars = ax.bar(x + (i - (len(builds) - 1) / 2) * w, pct, w, label=label)
        for bar, (key, _) in zip(bars, RESOURCE_KEYS):
            ax.annotate(str(b.get(key, "?")), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        textcoords="offset points", xytext=(0, 2), ha="center", fontsize=6)
    ax.set_xticks(x, [name for _, name in RESOURCE_KEYS])
    ax.set_ylabel("% of the device (labels: count)")
    ax.set_title("Resources", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    labels = [label for label, _ in builds]
    fmax = [b.get("fmax_mhz") or 0 for _, b in builds]
    target = [b.get("target_mhz") or 0 for _, b in builds]
    y = np.arange(len(builds))
    ax2.barh(y, fmax, height=0.5, color=["tab:green" if f >= t else "tab:red" for f, t in zip(fmax, target)], label="fmax (nextpnr)")
    ax2.scatter(target, y, color="black", marker="|", s=300, label="target clock", zorder=3)
    for yi, f in zip(y, fmax):
        ax2.annotate(f"{f:.1f}", (f, yi), textcoords="offset points", xytext=(3, -3), fontsize=7)
    ax2.set_yticks(y, labels, fontsize=7)
    ax2.set_xlabel("MHz")
    ax2.set_title("fmax vs target", fontsize=9)
    ax2.legend(fontsize=7, loc="lower right")
    return _png(fig)


# -- tables ----------------------------------------------------------------------------------------

def build_row(b: dict) -> dict:
    """The README/report row of one build: resources, fmax, throughput at fmax, GOPS per kLUT.

    ops per image = 2 x the dense network's MACs (`dense_macs_per_image`): the work the image
    represents, not the (fewer) nonzero MACs the hardware does.
    """
    cycles = b.get("cycles_per_image")
    fmax = b.get("fmax_mhz")
    ips = fmax * 1e6 / cycles if cycles and fmax else None
    ops = 2 * b["dense_macs_per_image"] if b.get("dense_macs_per_image") else None
    gops = ops * ips / 1e9 if ops and ips else None
    luts = b.get("luts")
    return {
        "board": b.get("board"), "device": b.get("device"), "luts": luts, "logic_cells": b.get("logic_cells"),
        "ffs": b.get("ffs"), "brams": b.get("brams"), "dsps": b.get("dsps"), "fmax_mhz": fmax,
        "target_mhz": b.get("target_mhz"), "fits": b.get("fits"), "timing_met": b.get("timing_met"),
        "cycles_per_image": cycles, "images_per_s": ips, "gops": gops,
        "gops_per_klut": gops / (luts / 1000) if gops and luts else None,
    }


def _fmt(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


BUILD_COLUMNS = [("model", "model"), ("board", "board"), ("luts", "LUTs"), ("logic_cells", "LCs"), ("ffs", "FFs"),
                 ("brams", "BRAM"), ("dsps", "DSP"), ("fmax_mhz", "fmax MHz"), ("target_mhz", "target MHz"),
                 ("cycles_per_image", "cycles/image"), ("images_per_s", "images/s at fmax"),
                 ("gops_per_klut", "GOPS/kLUT")]


def build_table_rows(runs: list[ModelRun]) -> list[dict]:
    rows = []
    for run in runs:
        for b in run.builds:
            row = build_row(b)
            row["model"] = run.name
            rows.append(row)
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _model_rows(runs):
    header = ["model", "family", "accuracy", "float acc.", "sparsity", "compression", "cycles/image",
              "MAC / ideal", "RTL check"]
    rows = []
    for run in runs:
        c, s, v = run.compress or {}, run.simulate or {}, run.verify or {}
        key, sp = _sparsity_of(run)
        acc = c.get("accuracy")
        fl = c.get("float_accuracy")
        cyc = s.get("cycles") if s else None
        if cyc is not None and s.get("io_cycles"):
            cyc = cyc + s["io_cycles"]
        ratio = s.get("mac_ratio") if s else None
        if v:
            mism = v.get("mismatches", v.get("output_mismatches"))
            n = v.get("images", v.get("images_checked"))
            check = f"{n} images, {mism} mismatches" if n is not None else "see verify.json"
            if v.get("cycles_match_model") is not None:
                check += ", cycles = model" if v["cycles_match_model"] else ", cycles differ from the model"
        else:
            check = "–"
        rows.append([run.name, run.family, _fmt(100 * acc if isinstance(acc, (int, float)) else None) + ("%" if acc is not None else ""),
                     _fmt(100 * fl if isinstance(fl, (int, float)) else None) + ("%" if fl is not None else ""),
                     f"{100 * sp:.1f}% ({key.replace('_', ' ')})" if sp is not None else "–",
                     _compression(run),
                     _fmt(cyc), _fmt(ratio, 3), check])
    return header, rows


def _compression(run: ModelRun) -> str:
    ratio = (run.compress or {}).get("compression_ratio")
    if not isinstance(ratio, (int, float)) and run.deployment is not None:
        ratio = model_stats(run.deployment)["totals"]["compression_ratio"]
    return f"{ratio:.1f}x" if isinstance(ratio, (int, float)) else "–"


def missing_notes(runs: list[ModelRun]) -> list[str]:
    notes = []
    for run in runs:
        lacks = [name for name, have in (("compress.json", run.compress), ("verify.json", run.verify),
                                         ("simulate.json", run.simulate), ("model.terwin", run.deployment))
                 if have is None]
        if run.simulate_derived:
            notes.append(f"{run.name}: no simulate.json; cycles computed from model.terwin with the cycle model")
        if lacks:
            notes.append(f"{run.name}: no {', '.join(lacks)}")
        notes += [f"{run.name}: {p}" for p in run.problems]
    if not any(run.builds for run in runs):
        notes.append("no bitstream build (build-*/report.json) in any model folder")
    return notes


# -- writers ---------------------------------------------------------------------------------------

def write_report(root, *, force: bool = False) -> tuple[Path, Path]:
    """Write the report into `root` through `terwin.outdir.OutputFolder` (shared: the folder holds the
    inputs; only a report.* or report_files/ file terwin did not write is refused, unless `force`)."""

    root = Path(root)
    runs = collect(root)
    if not runs:
        raise TerwinError(f"{root}: no model folders (with compress.json, verify.json, simulate.json, "
                          f"model.terwin or build reports) found")
    figures: list[tuple[str, str, bytes]] = []  # (file name, caption, png)

    acc = plot_accuracy(runs)
    if acc:
        figures.append(("accuracy_vs_sparsity.png", "Accuracy vs sparsity", acc))
    for run in runs:
        png = plot_cycles(run)
        if png:
            figures.append((f"cycles_{run.name}.png", f"{run.name}: cycles per layer vs ideal", png))
    for run in runs:
        png = plot_tile_masks(run)
        if png:
            figures.append((f"tile_masks_{run.name}.png", f"{run.name}: tile masks", png))
    builds = [(f"{run.name} / {b['board']}", b) for run in runs for b in run.builds]
    res = plot_resources(builds)
    if res:
        figures.append(("resources.png", "Resources and fmax per board", res))

    model_header, model_rows = _model_rows(runs)
    build_rows = build_table_rows(runs)
    build_cells = [[_fmt(r[k], 3 if k == "gops_per_klut" else 1) for k, _ in BUILD_COLUMNS] for r in build_rows]
    build_header = [h for _, h in BUILD_COLUMNS]
    missing = missing_notes(runs)
    title = f"terwin report: {root.resolve().name}"
    notes = ("GOPS counts 2 operations per MAC of the dense (uncompressed) network at fmax; "
             "cycles/image is compute plus input/output stream cycles from the exact cycle model; "
             "PE utilisation = ideal MAC cycles (nonzero MACs / PEs) / MAC cycles.")

    with OutputFolder(root, force=force, shared=True, option="report folder") as stage:
        _write(stage, title, notes, figures, missing, (model_header, model_rows), (build_header, build_cells))
    return root / "report.html", root / "report.md"


def _write(out: Path, title, notes, figures, missing, models, builds) -> None:
    model_header, model_rows = models
    build_header, build_cells = builds
    files = out / REPORT_FILES
    files.mkdir()
    md = [f"# {title}", "", "## Models", "", markdown_table(model_header, model_rows), ""]
    if build_cells:
        md += ["## Bitstreams", "", markdown_table(build_header, build_cells), "", notes, ""]
    md += ["## Figures", ""]
    for name, caption, png in figures:
        (files / name).write_bytes(png)
        md += [f"### {caption}", "", f"![{caption}]({REPORT_FILES}/{name})", ""]
    if missing:
        md += ["## Missing", ""] + [f"* {m}" for m in missing] + [""]
    (out / "report.md").write_text("\n".join(md))

    def table_html(header, rows):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;"
             "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}"
             ".note{color:#555;font-size:12px}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", "<h2>Models</h2>", table_html(model_header, model_rows)]
    if build_cells:
        parts += ["<h2>Bitstreams</h2>", table_html(build_header, build_cells),
                  f"<p class='note'>{html.escape(notes)}</p>"]
    parts.append("<h2>Figures</h2>")
    for _, caption, png in figures:
        data = base64.b64encode(png).decode()
        parts.append(f"<h3>{html.escape(caption)}</h3><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>")
    if missing:
        parts += ["<h2>Missing</h2><ul>"] + [f"<li>{html.escape(m)}</li>" for m in missing] + ["</ul>"]
    parts.append("</body></html>")
    (out / "report.html").write_text("\n".join(parts))
