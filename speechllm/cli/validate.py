"""``speechllm validate MANIFEST``: schema, duplicate ids and audio checks, counted by problem."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    from speechllm.config.loader import range_arg

    p = sub.add_parser(
        "validate",
        help="check a manifest: schema, duplicate ids, missing/unreadable/empty/NaN/silent/short/long audio",
        description="Check every row of a manifest and print the count of each problem with the first "
        "few ids. Exits 1 when any problem is found, 0 otherwise.",
    )
    p.add_argument("manifest", metavar="MANIFEST", help="manifest JSONL file")
    p.add_argument("--check-audio", action=argparse.BooleanOptionalAction, default=True,
                   help="decode every audio file and check it (default: on; --no-check-audio checks only the rows)")
    p.add_argument("--min-seconds", type=range_arg(float, ge=0), default=0.1, metavar="S",
                   help="audio shorter than this is a problem (default 0.1)")
    p.add_argument("--max-seconds", type=range_arg(float, gt=0), default=None, metavar="S",
                   help="audio longer than this is a problem (default: no limit; 30 is Whisper's window)")
    p.add_argument("--examples", type=range_arg(int, ge=0), default=5, metavar="N", help="ids shown per problem (default 5)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from speechllm.data.validate import validate_manifest

    report = validate_manifest(args.manifest, check_audio=args.check_audio, min_seconds=args.min_seconds,
                               max_seconds=args.max_seconds, max_examples=args.examples)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if report.ok else 1
