"""`terwin report DIR`: DIR/report.html (self-contained) and DIR/report.md (plots in DIR/report_files/).

DIR is a demo folder (one sub-folder per model) or a single model folder; see `terwin.report`.
"""
from __future__ import annotations


def add_arguments(parser):
    parser.add_argument("dir", help="demo or model folder")


def run(args) -> int:
    from terwin.report import collect, missing_notes, write_report

    html_path, md_path = write_report(args.dir)
    missing = missing_notes(collect(args.dir))
    print(f"wrote {html_path} and {md_path}")
    for note in missing:
        print(f"  missing: {note}")
    return 0
