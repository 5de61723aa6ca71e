"""``speechllm config``: print a resolved recipe, or every config field with its help."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show a resolved recipe config or list every config field")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)

    show = csub.add_parser("show", help="print the config that a run would use")
    show.add_argument("--config", "-c", default=None, help="recipe YAML (default: built-in defaults)")
    show.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.lr=3e-4")
    show.set_defaults(func=_show)

    fields = csub.add_parser("fields", help="list every config key with its type, default and help")
    fields.set_defaults(func=_fields)


def _show(args: argparse.Namespace) -> int:
    from speechllm.config import RunConfig, dump_yaml, load_config

    cfg = load_config(RunConfig, args.config, args.overrides)
    print(dump_yaml(cfg), end="")
    return 0


def _fields(args: argparse.Namespace) -> int:
    from speechllm.config import RunConfig, iter_field_help

    for key, type_name, default, help_text in iter_field_help(RunConfig):
        print(f"{key:34s} {type_name:28s} default={default!r}\n    {help_text}")
    return 0
