"""`terwin report DIR`: DIR/report.html (self-contained) and DIR/report.md (plots in DIR/report_files/).

DIR is a demo folder (one sub-folder per model) or a single model folder; see `terwin.report`.
"""
from __future__ import annotations


def add_arguments(parser):
    parser.add_argument("dir", help="demo or model folder")
    parser.add_argument("--force", action="store_true",
                        help="replace report.html, report.md or report_files/ even if terwin did not write them")


def run(args) -> int:
    from terwin.report import collect, missing_notes, write_report

    html_path, md_path = write_report(args.dir, force=args.force)
    missing = missing_notes(collect(args.dir))
    print(f"wrote {html_path} and {md_path}")
    for note in missing:
        print(f"  missing: {note}")
    return 0
