"""`terwin compress`: train a CNN (float, then compressed) and export an integer model.

Without `--model`: the family's built-in digits CNN on the digits. With `--model FILE.py:FACTORY`:
the network FACTORY() returns (a torch.nn.Module; `--weights STATE.pt` its trained state_dict) on
`--data digits|digits32|FILE.npz`, captured with torch.fx (`terwin.algo.graph`; an unsupported op
is refused before any training).

`--codec huffman` stores each weighted layer's weight stream Huffman-coded too (`terwin.codec`,
format version 3); compress.json says `codec`, `weight_stream_bits` (the bits the design's weight
memories hold on chip, width x depth as built, decoder tables included), `weight_memory` (those bits
per memory and against the raw design: `terwin.engines.weight_memory_report`) and `weight_stream` (the
file's coded streams per layer) for every codec. `--storage xz|bz2|lzw` compresses the whole file (the model and
its checksum are those of the decompressed file); compress.json says `file_bytes` and `stored_bytes`.

Writes DIR/model.terwin and DIR/compress.json, both at once when training succeeds; DIR is checked
before training starts (`terwin.outdir`). The family modules
(`terwin.algo.ternary.flow`, `terwin.algo.winograd.flow`) each provide `WEIGHT_FORMAT`,
`add_arguments(group)` for their own options, `options_from_args(args, spec)` (the family's options
dataclass) and `compress(options) -> (Deployment, compress.json dict)`; a family that takes a
user's model names its module in the engine registry (`Engine.model_flow`: `options_from_args`,
`compress(options, model, data, weights=)`).
"""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from terwin import codec, engines, fileformat
from terwin.checks import seed
from terwin.deployment import CODECS
from terwin.errors import TerwinError
from terwin.outdir import OutputFolder
from terwin.spec import load_spec

# one compression family per engine (`terwin.engines`): the module of its flow
FAMILIES = {e.name: e.compress_flow for e in engines.ENGINES.values()}


def add_arguments(parser):
    parser.add_argument("--family", choices=sorted(FAMILIES), default="ternary", help="compression family (default: ternary)")
    flows = {family: importlib.import_module(module) for family, module in FAMILIES.items()}
    defaults = ", ".join(f"{flow.DEFAULT_SPEC.name} for {family}" for family, flow in flows.items())
    parser.add_argument("--spec", help=f"hardware spec: a preset name or a spec .json file (default: {defaults})")
    parser.add_argument("--seed", type=seed, default=0, help="training seed (default: 0)")
    parser.add_argument("--out", required=True, help="output folder for model.terwin and compress.json")
    parser.add_argument("--force", action="store_true",
                        help="write into --out even if it holds files terwin did not write (they are kept)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--codec", choices=CODECS, default="raw",
                        help="how the weight stream is stored: raw, or huffman (canonical Huffman codes, decoded "
                             "in hardware; docs/codecs.md). Default: raw")
    parser.add_argument("--storage", choices=sorted(fileformat.STORAGE), default="raw",
                        help="store model.terwin compressed with xz (lzma) or bz2 from Python's standard library, "
                             "or LZW (terwin.lzw); every command reads it as it is. Default: raw")
    parser.add_argument("--model", metavar="FILE.py:FACTORY",
                        help="compress your own network: FACTORY() in FILE.py returns the torch.nn.Module "
                             "(default: the family's built-in digits CNN)")
    parser.add_argument("--weights", metavar="STATE.pt",
                        help="with --model: its trained state_dict (torch.save(model.state_dict(), ...)); the float "
                             "training is skipped and compression fine-tunes from it")
    parser.add_argument("--data", metavar="digits|digits32|FILE.npz",
                        help="with --model: the images (default digits; digits32 = digits upsampled to 32x32; an .npz "
                             "holds x_train, y_train, x_test, y_test)")
    for family, flow in flows.items():
        flow.add_arguments(parser.add_argument_group(f"{family} family"))


def run(args) -> int:
    module = importlib.import_module(FAMILIES[args.family])
    spec = module.DEFAULT_SPEC if args.spec is None else load_spec(args.spec)
    if spec.weight_format != args.family:  # an engine's name is the weight format it runs
        raise TerwinError(f"spec {spec.name} has weight_format {spec.weight_format!r}, "
                          f"but --family {args.family} needs {args.family!r}")
    model_flow = engines.get(args.family).model_flow
    if args.model is None:
        for option, value in (("--weights", args.weights), ("--data", None if args.data == "digits" else args.data)):
            if value is not None:
                raise TerwinError(f"{option} needs --model FILE.py:FACTORY (the built-in net is the 8x8 digits CNN)")
    elif model_flow is None:
        raise TerwinError(f"--family {args.family} compresses only its built-in digits net; --model needs "
                          f"--family {' or '.join(e.name for e in engines.ENGINES.values() if e.model_flow)}")
    out = Path(args.out)
    with OutputFolder(out, force=args.force) as stage:  # a bad --out is refused before training
        if args.model is None:
            dep, report = module.compress(module.options_from_args(args, spec))
        else:
            from terwin.algo.data import load_data
            from terwin.algo.graph import load_model
            flow = importlib.import_module(model_flow)
            options = flow.options_from_args(args, spec)
            data = load_data(args.data or "digits", act_bits=spec.act_bits)
            model = load_model(args.model, seed=args.seed)  # its initial weights: FACTORY() under --seed
            dep, report = flow.compress(options, model, data, weights=args.weights)
        dep = codec.with_codec(dep, args.codec)     # after export: the weights are the same for every codec
        report = {**report, **engines.codec_report_fields(dep),
                  "checksum": fileformat.save(dep, stage / "model.terwin", storage=args.storage),
                  "storage": args.storage, "file_bytes": len(fileformat.to_bytes(dep)),
                  "stored_bytes": (stage / "model.terwin").stat().st_size}
        (stage / "compress.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    summary = {k: report[k] for k in ("float_accuracy", "accuracy", "reference_mismatches") if k in report}
    print(f"wrote {out / 'model.terwin'} and {out / 'compress.json'}: {json.dumps(summary)}")
    figures = report.get("numerics", {})
    if figures.get("mode") == "pinned" and not figures.get("pinned"):
        print(f"terwin: note: float numerics not pinned ({figures['why']}): another machine trains another model "
              f"from the same seed", file=sys.stderr)
    return 0
