"""``speechllm config``: print a resolved recipe, or every config field with its help."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show a resolved recipe config or list every config field")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)

    show = csub.add_parser("show", help="print the config that a run would use")
    show.add_argument("--config", "-c", default=None, help="recipe YAML (default: built-in defaults)")
    from speechllm.cli import add_overrides

    add_overrides(show)
    show.set_defaults(func=_show)

    get = csub.add_parser("get", help="print one resolved value, e.g. `speechllm config get -c r.yaml model.llm` "
                          "(for scripts: no YAML to parse)")
    get.add_argument("key", help="dotted key, e.g. model.llm")
    get.add_argument("--config", "-c", default=None, help="recipe YAML (default: built-in defaults)")
    add_overrides(get)
    get.set_defaults(func=_get)

    fields = csub.add_parser("fields", help="list every config key with its type, default and help")
    fields.set_defaults(func=_fields)


def _show(args: argparse.Namespace) -> int:
    from speechllm.config import RunConfig, dump_yaml, load_config

    cfg = load_config(RunConfig, args.config, args.overrides)
    print(dump_yaml(cfg), end="")
    return 0


def _get(args: argparse.Namespace) -> int:
    import dataclasses

    from speechllm.config import RunConfig, load_config
    from speechllm.errors import ConfigError

    value = load_config(RunConfig, args.config, args.overrides)
    for part in args.key.split("."):
        if not dataclasses.is_dataclass(value) or part not in {f.name for f in dataclasses.fields(value)}:
            raise ConfigError(f"{args.key}: no such config key (`speechllm config fields` lists them)")
        value = getattr(value, part)
    if dataclasses.is_dataclass(value) or isinstance(value, (list, dict)):
        import yaml

        value = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        print(yaml.safe_dump(value, sort_keys=False), end="")
    elif isinstance(value, bool):
        print(str(value).lower())
    else:
        print("" if value is None else value)
    return 0


def _fields(args: argparse.Namespace) -> int:
    from speechllm.config import RunConfig, iter_field_help

    for key, type_name, default, help_text in iter_field_help(RunConfig):
        print(f"{key:34s} {type_name:28s} default={default!r}\n    {help_text}")
    return 0
