"""The ``speechllm`` command line: one parser, one module per sub-command.

Each module in :data:`COMMAND_MODULES` exposes ``register(subparsers)``, which adds its parser and
sets ``func`` to a function taking the parsed arguments. Command modules import heavy libraries
(torch, transformers) inside that function, so ``speechllm --help`` stays fast. Errors the user can
fix (:class:`~speechllm.errors.SpeechLLMError`) are printed on one line with a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from speechllm import __version__
from speechllm.errors import SpeechLLMError

# Order = order in `speechllm --help`: the pipeline's order, then tools.
COMMAND_MODULES: list[str] = [
    "env",
    "assets",
    "prepare",
    "validate",
    "split",
    "synth",
    "describe",
    "generate",
    "generate_replay",
    "cache-features",
    "train",
    "merge",
    "config",
    "eval",
    "init-model",
    "infer",
]


def _thread_count(value: str) -> int | str:
    if value.strip().lower() == "auto":
        return "auto"
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechllm",
        description="Train speech-aware LLMs the DeSTA2 way. Run `speechllm COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"speechllm {__version__}")
    parser.add_argument(
        "--num-threads",
        type=_thread_count,
        default=None,
        help="torch CPU threads, or 'auto' (the cores idle right now, at least 1) "
        "(default: $SPEECHLLM_NUM_THREADS, else $OMP_NUM_THREADS, else torch's)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"speechllm.cli.{name.replace('-', '_')}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``speechllm``. Returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from speechllm.utils.threads import set_num_threads

    set_num_threads(args.num_threads)
    try:
        result = args.func(args)
    except SpeechLLMError as e:
        print(f"speechllm {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"speechllm {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def infer_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``speechllm-infer`` (same as ``speechllm infer``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return main(["infer", *argv])
