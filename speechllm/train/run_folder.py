"""What a run folder records about its run (provenance) and how a run is stopped (signals)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

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
