"""Who may run a model's own Python code (``auto_map`` in its ``config.json``): only the person
running the command.

Hugging Face runs a model folder's ``.py`` files when ``trust_remote_code=True`` is passed and the
folder's config names classes through ``auto_map``. A config file (a recipe, or the
``speechllm_config.json`` of a checkpoint someone else wrote) must never be able to switch that
on: ``model.trust_remote_code: true`` in a file is only a request, refused unless the user has
allowed remote code for this process with ``--trust-remote-code`` or
``SPEECHLLM_TRUST_REMOTE_CODE=1``. Every HF load that could run such code takes its
``trust_remote_code`` value from :func:`trust_remote_code`. See ``docs/security.md``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from speechllm.errors import SpeechLLMError

ENV_VAR = "SPEECHLLM_TRUST_REMOTE_CODE"
CLI_FLAG = "--trust-remote-code"
HOW_TO_ALLOW = f"rerun with {CLI_FLAG} (or {ENV_VAR}=1) only if you trust that code"
# The source named in a refusal when the loader has no file to name (the config was loaded earlier).
CONFIG_SOURCE = "the run config (recipe or key=value override)"

class RemoteCodeRefused(SpeechLLMError):
    """A config or model asked to run custom Python code that the user did not allow."""


def allow_remote_code(allowed: bool = True) -> None:
    """Apply the command line's ``--trust-remote-code``: sets ``SPEECHLLM_TRUST_REMOTE_CODE=1`` so
    that the processes this one starts (``describe --jobs`` workers) are allowed too."""
    if allowed:
        os.environ[ENV_VAR] = "1"
    else:
        os.environ.pop(ENV_VAR, None)


def remote_code_allowed() -> bool:
    """True when the user allowed remote code: ``--trust-remote-code`` or ``SPEECHLLM_TRUST_REMOTE_CODE=1``."""
    return os.environ.get(ENV_VAR, "").strip().lower() in ("1", "true", "yes")


def trust_remote_code(requested: bool, *, source: str, model: str) -> bool:
    """The ``trust_remote_code`` value to pass to Hugging Face for ``model``.

    True only when the user allowed remote code; ``requested`` (``model.trust_remote_code`` read
    from ``source``, a recipe or a checkpoint) cannot turn it on and is refused when it asks.
    """
    if remote_code_allowed():
        return True
    if requested:
        raise RemoteCodeRefused(
            f"{source}: model.trust_remote_code is true, asking to run the Python code shipped with {model}; "
            f"a file cannot allow that, only the person running the command can: {HOW_TO_ALLOW}"
        )
    return False


@contextlib.contextmanager
def refusing_remote_code(model: str) -> Iterator[None]:
    """Turn Hugging Face's ``ValueError`` for a model that needs its own code (while it is not
    allowed) into a one-line :class:`RemoteCodeRefused`; other errors pass unchanged."""
    try:
        yield
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise RemoteCodeRefused(
            f"{model}: its config.json asks to run the model's own Python code (auto_map); it was not run: "
            f"{HOW_TO_ALLOW}"
        ) from None
