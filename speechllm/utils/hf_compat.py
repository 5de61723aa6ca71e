"""One place for the transformers API names that moved within the 5.x series.

transformers 5.2x renamed the KV-cache keyword of model forwards and outputs from
``past_key_values`` to ``cache`` (the old name warns and is removed in 5.40); earlier 5.x releases
know only ``past_key_values``. ``pyproject.toml`` admits every 5.x, so the name is read off the
model instead of assumed.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any


@functools.cache
def _cache_kwarg_of(cls: type) -> str:
    try:
        params = inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(module: Any, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` with the keyword ``module.forward`` takes its KV cache by."""
    return {_cache_kwarg_of(type(module)): cache}


def output_cache(output: Any) -> Any:
    """The KV cache a forward returned (``output.cache``, or ``past_key_values`` before 5.2x)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)
