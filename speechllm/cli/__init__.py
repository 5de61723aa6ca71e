"""The ``speechllm`` command line: one parser, one module per sub-command.

Each module in :data:`COMMAND_MODULES` exposes ``register(subparsers)``, which adds its parser and
sets ``func`` to a function taking the parsed arguments. Command modules import heavy libraries
(torch, transformers) inside that function, so ``speechllm --help`` stays fast. Errors the user can
fix (:class:`~speechllm.errors.SpeechLLMError`) are printed on one line with a non-zero exit.
Storage faults (disk full, quota, read-only or blocked output folders; see
:func:`storage_fault`) are printed on one line naming the file and what to do, with exit code
:data:`OS_ERROR_EXIT_CODE`; every stage writes atomically or resumably, so rerunning the same
command after freeing space continues where it stopped.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import io
import logging
import os
import re
import sys
import traceback
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
    "convert",
    "infer",
    "study",
]
# Sub-commands that load Hugging Face models: they take --trust-remote-code (docs/security.md).
REMOTE_CODE_COMMANDS: tuple[str, ...] = (
    "describe", "generate", "generate-replay", "cache-features", "train", "eval", "init-model", "infer",
)
_OVERRIDE = re.compile(r"^[A-Za-z_][\w.-]*=")


def _thread_count(value: str) -> int | str:
    if value.strip().lower() == "auto":
        return "auto"
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {value!r}")


# sysexits.h EX_IOERR: scripts can tell "the disk is full / the folder is not writable" (free
# space or choose another folder, then rerun) from a bad input or config (exit 2).
OS_ERROR_EXIT_CODE = 74

# errno -> (words, what to do). Only these are storage faults; any other OSError (a network
# error, a bug) keeps its traceback.
_STORAGE_ERRORS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on device", "free space on that disk or choose an output folder on another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota or choose an output folder elsewhere"),
    errno.EFBIG: ("file too large for this file system", "choose an output folder on another file system"),
    errno.EROFS: ("read-only file system", "choose a writable output folder"),
    errno.EACCES: ("permission denied", "choose a folder you can write to, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "choose a folder you can write to, or fix its permissions"),
    errno.ENOENT: ("no such file or folder", "check the path (and that its parent folder exists)"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another path or move that file"),
    errno.EEXIST: ("a file is in the way", "a folder or a new file was expected there: choose another path or move it"),
    errno.EISDIR: ("is a folder, not a file", "give a file path"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
    errno.EIO: ("input/output error", "check the disk (dmesg) and rerun"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) or use fewer --jobs"),
}
# Libraries written in Rust (safetensors, tokenizers) report an I/O error as "... (os error 28)".
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")
# Local variable names that hold a file path as a plain string (safetensors' save_file(filename)).
_PATH_NAMES = ("path", "filename", "file", "filepath", "output", "out", "dest")


def storage_fault(exc: BaseException) -> tuple[int, str | None] | None:
    """``(errno, file)`` when ``exc`` (or an exception it was raised from) is a storage fault
    (:data:`_STORAGE_ERRORS`), else ``None``. ``file`` is the error's own file name or, when the
    error has none (``write()`` on a full disk), the innermost file or path in the traceback."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = None
        if isinstance(current, OSError) and current.errno in _STORAGE_ERRORS:
            code = current.errno
            if current.filename is not None:
                return code, os.fsdecode(current.filename)
        else:
            match = _RUST_OS_ERROR.search(str(current))
            if match and int(match.group(1)) in _STORAGE_ERRORS:
                code = int(match.group(1))
        if code is not None:
            return code, _path_in_traceback(current.__traceback__)
        current = current.__cause__ or current.__context__
    return None


def _path_in_traceback(tb) -> str | None:
    """The file the failing code was writing, read from the frames' local variables (innermost
    first): a file object's name, a path object, an object's ``.path``, or a string variable
    named like a path."""
    for frame, _ in reversed(list(traceback.walk_tb(tb))):
        for name, value in frame.f_locals.items():
            if isinstance(value, io.IOBase) and isinstance(getattr(value, "name", None), str):
                return value.name
            if isinstance(value, os.PathLike):
                return os.fspath(value)
            if isinstance(value, str) and name in _PATH_NAMES and value:
                return value
            try:
                attr = getattr(value, "path", None)
            except Exception:  # noqa: BLE001 - a property of an unknown object may raise anything
                attr = None
            if isinstance(attr, os.PathLike):
                return os.fspath(attr)
    return None


def _storage_message(code: int, path: str | None) -> str:
    words, todo = _STORAGE_ERRORS[code]
    where = f"{path}: " if path else "(file unknown): "
    return f"{where}{words} ({errno.errorcode.get(code, code)}): {todo}"


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
    from speechllm.utils.remote_code import CLI_FLAG, ENV_VAR

    for name in REMOTE_CODE_COMMANDS:
        sub.choices[name].add_argument(
            CLI_FLAG, action="store_true",
            help=f"let models run their own Python code (auto_map in config.json); also ${ENV_VAR}=1. "
            "A recipe or checkpoint can never turn this on; use it only for code you trust")
    return parser


def add_overrides(p: argparse.ArgumentParser, example: str = "train.lr=3e-4") -> None:
    """The one override convention, for every command that reads a config: dotted ``KEY=VALUE``
    anywhere on the line, or as ``--set KEY=VALUE`` (repeatable); applied in command-line order,
    so a later one wins."""
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"dotted config overrides, e.g. {example}")
    p.add_argument("--set", dest="set_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a dotted config override (the same as KEY=VALUE on its own); repeatable")


def add_recipe_options(p: argparse.ArgumentParser, applies: str, example: str) -> None:
    """``--config`` (a recipe; ``applies`` says which of its sections this command reads) and
    ``--set KEY=VALUE``, for the stage commands (describe, generate, infer, eval): a bare
    ``KEY=VALUE`` on their line is an override too (:func:`parse_command_line`), and a flag given
    wins over the recipe."""
    p.add_argument("--config", "-c", default=None, help=f"recipe YAML; {applies}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"dotted config override (or KEY=VALUE on its own), e.g. {example}; repeatable")


def _in_command_line_order(argv: Sequence[str], given: list[str]) -> list[str]:
    """``given`` (the overrides argparse collected, ``--set`` ones included) in the order the
    command line holds them."""
    from collections import Counter

    left = Counter(given)
    ordered: list[str] = []
    skip = False
    for i, tok in enumerate(argv):
        if skip:
            skip = False
            continue
        value = tok
        if tok == "--set" and i + 1 < len(argv):
            value, skip = argv[i + 1], True
        elif tok.startswith("--set="):
            value = tok[len("--set="):]
        if left[value] > 0:
            ordered.append(value)
            left[value] -= 1
    return ordered + list(left.elements())


def _overrides_as_set(tokens: Sequence[str]) -> list[str]:
    """``tokens`` with each dotted ``KEY=VALUE`` that is not an option's value written as
    ``--set KEY=VALUE`` (for a command whose sub-command names are positional)."""
    out: list[str] = []
    for i, tok in enumerate(tokens):
        prev = tokens[i - 1] if i else ""
        is_value = prev.startswith("-") and "=" not in prev  # e.g. --set KEY=VALUE, --out a.b=c
        if _OVERRIDE.match(tok) and "." in tok.split("=", 1)[0] and not is_value:
            out += ["--set", tok]
        else:
            out.append(tok)
    return out


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args`` that takes dotted ``key=value`` overrides anywhere on the line (argparse
    fills a positional list once, so ``train a=1 --resume auto b=2`` would leave ``b=2`` unrecognized)
    and as ``--set KEY=VALUE``, all in command-line order."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from speechllm.cli.generate import MERGE_COMMAND

    if "generate" in argv[:-1] and argv[argv.index("generate") + 1] == "merge":  # a sub-command of generate
        at = argv.index("generate")
        argv = [*argv[:at], MERGE_COMMAND, *argv[at + 2:]]
    if argv[:1] == ["eval"]:  # its sub-command names would take a bare KEY=VALUE: pass them as --set
        argv = ["eval", *_overrides_as_set(argv[1:])]
    args, extras = parser.parse_known_args(argv)
    if getattr(args, "command", None) == MERGE_COMMAND:
        args.command = "generate merge"
    overrides = getattr(args, "overrides", None)
    unknown = [a for a in extras if not (isinstance(overrides, list) and _OVERRIDE.match(a))]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if isinstance(overrides, list):
        paths = getattr(args, "paths", None)
        if isinstance(paths, list):  # a variable list of files swallows what follows it: dotted keys are overrides
            moved = [p for p in paths if _OVERRIDE.match(p) and "." in p.split("=", 1)[0]]
            args.paths = [p for p in paths if p not in moved]
            extras = [*moved, *extras]
        given = [*getattr(args, "set_overrides", []), *overrides, *extras]
        args.overrides = _in_command_line_order(argv, given)  # a later override wins
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``speechllm``. Returns the process exit code."""
    parser = build_parser()
    args = parse_command_line(parser, argv)
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
    if not sys.stderr.isatty():
        # Per-tensor "Loading weights" bars are redrawn as thousands of characters in a log file;
        # our own stages print progress lines instead (speechllm.utils.progress).
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if getattr(args, "trust_remote_code", False):
        from speechllm.utils.remote_code import allow_remote_code

        allow_remote_code()
    try:
        result = args.func(args)
    except SpeechLLMError as e:
        print(f"speechllm {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"speechllm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        fault = storage_fault(e)
        if fault is None:
            raise
        print(f"speechllm {args.command}: error: {_storage_message(*fault)}", file=sys.stderr)
        return OS_ERROR_EXIT_CODE
    return int(result or 0)


def infer_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``speechllm-infer`` (same as ``speechllm infer``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return main(["infer", *argv])
