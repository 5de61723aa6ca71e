"""What a run folder records about its run (provenance), who may train into it (one run at a
time), and how a run is stopped (signals)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from speechllm.errors import SpeechLLMError

log = logging.getLogger(__name__)


def environment() -> dict[str, Any]:
    """Package versions, the git commit and whether the tree was dirty (``environment.json``)."""
    import importlib.metadata as md
    import subprocess

    out: dict[str, Any] = {}
    for pkg in ("speechllm", "torch", "transformers", "peft", "accelerate", "safetensors", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    try:
        root = Path(__file__).resolve().parents[2]
        out["git_commit"] = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                           text=True, timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        out["git_dirty"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out


class StopFlag:
    """SIGTERM / SIGINT set a flag; the loop saves at the end of the step and exits cleanly."""

    def __init__(self):
        self.raised = False
        self._old: dict[int, Any] = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):  # noqa: ARG002
        log.warning("signal %d: saving a checkpoint at the end of this step", signum)
        self.raised = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


TRAIN_LOCK = ".train.lock"


@contextlib.contextmanager
def training_lock(output_dir: str | os.PathLike) -> Iterator[None]:
    """One ``speechllm train`` per run folder: the main process (rank 0) holds a non-blocking
    ``flock`` on ``<output_dir>/.train.lock`` while the run lasts, so a second run into the same
    folder is refused at once instead of interleaving checkpoints and metrics. The lock goes
    with the process, so a killed run leaves nothing to clean up."""
    import fcntl

    if int(os.environ.get("RANK", "0") or 0) != 0:  # the other ranks share rank 0's run
        yield
        return
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / TRAIN_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpeechLLMError(
                f"{out}: another `speechllm train` is running in this folder (it holds {out / TRAIN_LOCK}); "
                "wait for it to finish, or give this run another train.output_dir") from None
        except OSError as e:  # a file system without locks (some network mounts)
            log.warning("%s: cannot lock (%s); make sure no other run trains into this folder", out, e.strerror)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
