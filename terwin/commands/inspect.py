"""`terwin inspect FILE`: the model's layers, shapes, sparsity and stored bits."""
from __future__ import annotations

import json
import os

from terwin import codec, engines, fileformat
from terwin.stats import model_stats


def add_arguments(parser):
    parser.add_argument("model", help="a .terwin model file")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")


def run(args) -> int:
    dep = fileformat.load(args.model)
    stats = model_stats(dep)
    stream = codec.report_fields(dep)  # the on-chip weight stream under the layers' codec (docs/codecs.md)
    stats["weight_stream"] = {"codec": stream["codec"], "bits": stream["weight_stream_bits"],
                              "raw_bits": stream["weight_stream"]["raw_bits"],
                              "huffman_bits": stream["weight_stream"]["huffman_bits"],
                              "huffman_table_bits": stream["weight_stream"]["huffman_table_bits"]}
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    spec = dep.spec
    shown = os.fsencode(args.model).decode("utf-8", "backslashreplace")  # an undecodable name prints too
    print(f"{shown}: terwin model, format v{fileformat.file_version(dep)}, sha256 {fileformat.file_checksum(args.model)[:16]}")
    print(f"spec {spec.name}: {engines.for_spec(spec).describe(spec)}, {spec.act_bits}-bit activations, "
          f"{spec.weight_format} weights, {spec.clock_mhz:g} MHz target")
    print(f"input {'x'.join(map(str, dep.input_shape))}, scale {dep.input_scale:g}; family {dep.meta.get('family', '?')}")
    # a graph (format version 2) has a column `reads`: the map a layer reads when it is not the previous
    # layer's, and +name for the residual it adds; a signed map (a projection shortcut) is marked in `kind`
    graph = dep.format_version > 1
    reads = [_reads(row) for row in stats["layers"]]
    width = max(len("reads"), *map(len, reads))
    head = (f"{'layer':<10} {'kind':<16} " + (f"{'reads':<{width}} " if graph else "") +
            f"{'in':>10} {'out':>10} {'weights':>8} {'nonzero':>8} {'tiles':>11} {'sparsity':>8} {'bits':>8}")
    print(head)
    print("-" * len(head))
    for row, via in zip(stats["layers"], reads):
        tiles = f"{row['tiles_kept']}/{row['tiles']}" if row.get("tiles") else "-"
        sp = f"{row['sparsity']:.3f}" if row.get("weights") else "-"
        kind = row["kind"] + (" (signed)" if row.get("signed") else "")
        print(f"{row['name']:<10} {kind:<16} " + (f"{via:<{width}} " if graph else "") +
              f"{row['in']:>10} {row['out']:>10} {row.get('weights', 0):>8} "
              f"{row.get('nonzero', 0):>8} {tiles:>11} {sp:>8} {row.get('weight_bits_stored', 0):>8}")
    t = stats["totals"]
    print(f"total: {t['weights']} weights, {t['nonzero']} nonzero, {t['weight_bits_stored']} stored weight bits "
          f"(+{t['requant_bits']} bias/requant bits), compression {t['compression_ratio']:.1f}x vs 32-bit float")
    w = stats["weight_stream"]
    print(f"weight stream on chip ({w['codec']} codec): {w['bits']} bits; raw {w['raw_bits']}, Huffman "
          f"{w['huffman_bits']} + {w['huffman_table_bits']} table bits")
    return 0


def _reads(row: dict) -> str:
    """`source` (when not the previous layer) and `+residual` of a statistics row; "-" for neither."""
    parts = ([row["source"]] if "source" in row else []) + ([f"+{row['residual']}"] if "residual" in row else [])
    return " ".join(parts) or "-"
