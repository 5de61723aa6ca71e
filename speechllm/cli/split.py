"""``speechllm split``: one manifest -> train/dev/test manifests (by field map or speaker hash)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from speechllm.config.loader import range_arg

    p = sub.add_parser(
        "split",
        help="split a manifest into train/dev/test (by its split field, or speaker-disjoint by hash)",
        description="Without --map, speakers are hashed (seeded) into train/dev/test so that no "
        "speaker is in two splits. With --map, rows go by an existing field's value.",
    )
    p.add_argument("manifest", metavar="MANIFEST", help="input manifest JSONL")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder for <split>.jsonl files")
    p.add_argument("--map", action="append", default=None, metavar="NAME=VALUE[+VALUE]",
                   help="e.g. --map train=train-clean-100+train-clean-360 --map dev=dev-clean; repeatable")
    p.add_argument("--field", default="split", help="field the --map values are read from (default: split)")
    p.add_argument("--dev", type=range_arg(float, ge=0, lt=1), default=0.05, help="speaker-hash rule: share of speakers in dev")
    p.add_argument("--test", type=range_arg(float, ge=0, lt=1), default=0.05, help="speaker-hash rule: share of speakers in test")
    p.add_argument("--seed", type=range_arg(int, ge=0), default=0, help="speaker-hash rule: seed")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from speechllm.data.split import parse_split_map, split_manifest

    mapping = parse_split_map(args.map) if args.map else None
    counts = split_manifest(args.manifest, args.out_dir, mapping=mapping, field=args.field,
                            dev=args.dev, test=args.test, seed=args.seed)
    print(" ".join(f"{k}={v}" for k, v in counts.items()) + f" -> {args.out_dir}")
    return 0
