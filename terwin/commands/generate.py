"""`terwin generate MODEL --out DIR`: Verilog for the top, memory images and a manifest."""
from __future__ import annotations

from terwin import fileformat


def add_arguments(parser):
    parser.add_argument("model", help="a .terwin model file")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--force", action="store_true",
                        help="write into --out even if it holds files terwin did not write (they are kept)")


def run(args) -> int:
    from terwin.sim import rtl
    dep = fileformat.load(args.model, hardware=True)  # a model too large is refused before anything is elaborated
    manifest = rtl.generate(dep, args.out, force=args.force)
    print(f"wrote {args.out}/{manifest['verilog']} (top {manifest['top']}), "
          f"{len(manifest['memory_images'])} memory images, manifest.json "
          f"(model {manifest['model_checksum'][:16]}, spec {dep.spec.name})")
    return 0
