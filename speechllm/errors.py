"""Error types. Every error the user can fix is a :class:`SpeechLLMError`: the CLI prints its
message on one line and exits non-zero instead of showing a traceback."""

from __future__ import annotations


class SpeechLLMError(Exception):
    """Base class for errors caused by input, configuration or environment (not by bugs)."""

    exit_code = 2


class ConfigError(SpeechLLMError):
    """A malformed config file, an unknown key, a wrong type or a bad ``key=value`` override."""


class AssetError(SpeechLLMError):
    """An offline asset that is unknown, not installed, or whose source files are missing/corrupt."""


class ModelResolutionError(SpeechLLMError):
    """A model reference (``offline:NAME``, a path or a hub id) that cannot be resolved."""
