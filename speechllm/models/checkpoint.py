"""Checkpoints: the config that names the frozen bases, and only the trained weights.

A checkpoint folder::

    speechllm_config.json   format version, the ModelConfig, the encoder and LLM references
                            (ref, resolved path or hub id, revision / commit / content hash) and
                            the shapes the adapter was built for
    adapter.safetensors     the adapter's weights (fp32)
    lora/                   peft's LoRA folder (adapter_config.json, adapter_model.safetensors),
                            only when LoRA was trained

Loading rebuilds the bases from their references and refuses, with a clear message, bases whose
shapes differ from those recorded; a content hash or commit that differs only warns (a
re-converted or re-saved base can differ in bytes and still be the same model).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from speechllm.errors import SpeechLLMError

log = logging.getLogger(__name__)

CONFIG_FILE = "speechllm_config.json"
ADAPTER_FILE = "adapter.safetensors"
LORA_DIR = "lora"
LLM_PARAMS_FILE = "llm_params.safetensors"  # LLM weights trained in place (model.llm_train), when any
PROMPT_FILE = "prompt.safetensors"  # prompt-tuning virtual tokens (model.prompt_tuning), when on
PREFIX_FILE = "prefix.safetensors"  # prefix-tuning keys/values (model.prefix_tuning), when on
FORMAT = "speechllm-checkpoint"
FORMAT_VERSION = 2
# Model settings added after format 1, with the behaviour a format-1 checkpoint was trained with
# (its config has no such key; today's defaults would differ).
_FORMAT_1_MODEL = {"qformer_context": "window", "frame_norm": "none"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


class CheckpointError(SpeechLLMError):
    """A checkpoint folder that is incomplete, malformed, or does not fit the bases."""


def content_sha256(path: str | os.PathLike) -> str | None:
    """SHA-256 over a model's weight files (name + bytes, sorted), or of a single ``.pt`` file.
    None for something that is not on disk (a hub id)."""
    from speechllm.utils.fs import sha256_file

    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if not p.is_dir():
        return None
    files = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def trained_weights_sha256(folder: str | os.PathLike) -> str | None:
    """SHA-256 over a checkpoint's trained weights (the adapter and, when present, the LoRA
    folder): what identifies the model a resumable output was written with, where the folder
    path alone would not notice a model retrained into the same folder."""
    folder = Path(folder)
    parts = [content_sha256(folder), content_sha256(folder / LORA_DIR)]
    if not any(parts):
        return None
    return hashlib.sha256("\n".join(p or "-" for p in parts).encode()).hexdigest()


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a complete safetensors file (missing, empty, truncated), or None.
    Reads the header only; safetensors checks that the data it describes is all there."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        return "missing"
    if p.stat().st_size == 0:
        return "empty"
    try:
        with safe_open(str(p), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        return f"unreadable or truncated ({e})"
    return None


def describe_base(ref: str, revision: str | None, resolved: str, hf_config: Any) -> dict[str, Any]:
    """How a checkpoint names a frozen base: the reference as given, where it resolved to, the
    hub revision asked for, the commit HF loaded (when known) and a content hash of local files."""
    local = Path(resolved).exists()
    return {
        "ref": ref,
        "resolved": resolved,
        "revision": revision,
        "commit": getattr(hf_config, "_commit_hash", None),
        "sha256": content_sha256(resolved) if local else None,
    }


def save_checkpoint(model, out_dir: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``model``'s checkpoint folder atomically (complete or absent)."""
    from safetensors.torch import save_file

    from speechllm import __version__
    from speechllm.config import to_dict
    from speechllm.models.llm_update import selected_llm_parameters
    from speechllm.utils.fs import atomic_directory

    spec = model.adapter.spec
    llm_cfg = model.base_causal_lm().config
    llm_state = {n: p.detach().to("cpu").contiguous()
                 for n, p in selected_llm_parameters(model.base_causal_lm(), model.config.llm_train).items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "speechllm_version": __version__,
        "model": to_dict(model.config),
        "encoder_layers": list(model.encoder.layers),
        "encoder": model.bases.get("encoder", {}),
        "llm": model.bases.get("llm", {}),
        "shapes": {
            "encoder_dim": spec.encoder_dim,
            "encoder_heads": spec.encoder_heads,
            "encoder_blocks": model.encoder.num_layers,
            "num_taps": spec.num_taps,
            "llm_dim": spec.llm_dim,
            "llm_vocab_size": int(model.llm.get_input_embeddings().num_embeddings),
            "llm_layers": getattr(llm_cfg, "num_hidden_layers", None),
        },
        "trained": ["adapter"] + (["lora"] if model.config.lora.enabled else [])
        + (["llm_params"] if llm_state else []) + (["prompt"] if model.prompt_embeddings is not None else [])
        + (["prefix"] if model.prefix_kv is not None else []),
    }
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.adapter.state_dict().items()}
    out = Path(out_dir)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        save_file(state, str(tmp / ADAPTER_FILE), metadata={"format": "pt"})
        if model.config.lora.enabled:
            model.llm.save_pretrained(str(tmp / LORA_DIR))
        if llm_state:
            save_file(llm_state, str(tmp / LLM_PARAMS_FILE), metadata={"format": "pt"})
        if model.prompt_embeddings is not None:
            save_file({"prompt_embeddings": model.prompt_embeddings.detach().to("cpu").float().contiguous()},
                      str(tmp / PROMPT_FILE), metadata={"format": "pt"})
        if model.prefix_kv is not None:
            save_file({"prefix_kv": model.prefix_kv.detach().to("cpu").float().contiguous()},
                      str(tmp / PREFIX_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def read_checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``speechllm_config.json``; missing or malformed files raise
    :class:`CheckpointError` naming the file and the fix."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(
            f"{folder}: no such checkpoint folder; create one with `speechllm init-model` or `speechllm train`"
        )
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise CheckpointError(
            f"{cfg_path}: missing; this is not a speechllm checkpoint (write one with "
            "`speechllm init-model --encoder M --llm M OUT` or `speechllm train`)"
        )
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: unreadable ({e}); re-save the checkpoint") from None
    if meta.get("format") != FORMAT or not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"{cfg_path}: not a speechllm checkpoint config (no 'format': {FORMAT!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path}: format version {meta['format_version']} is newer than this speechllm "
            f"understands ({FORMAT_VERSION}); upgrade speechllm"
        )
    problem = safetensors_problem(folder / ADAPTER_FILE)
    if problem is not None:
        raise CheckpointError(
            f"{folder / ADAPTER_FILE}: {problem}; the checkpoint is incomplete (copy the whole folder, "
            "or re-save it)"
        )
    lora_file = folder / LORA_DIR / "adapter_model.safetensors"
    problem = safetensors_problem(lora_file) if "lora" in meta.get("trained", []) else None
    if problem is not None:
        raise CheckpointError(
            f"{lora_file}: {problem}, but the config says LoRA was trained; copy the lora/ folder with "
            "the checkpoint"
        )
    return meta


def _check_shapes(meta: dict[str, Any], model, folder: Path) -> None:
    want = meta.get("shapes", {})
    spec = model.adapter.spec
    have = {
        "encoder_dim": spec.encoder_dim,
        "encoder_heads": spec.encoder_heads,
        "encoder_blocks": model.encoder.num_layers,
        "num_taps": spec.num_taps,
        "llm_dim": spec.llm_dim,
        "llm_vocab_size": int(model.llm.get_input_embeddings().num_embeddings),
    }
    bad = [f"{k} {want[k]} (checkpoint) vs {v} (base)" for k, v in have.items() if k in want and want[k] != v]
    if bad:
        raise CheckpointError(
            f"{folder}: the bases do not match the trained model: {'; '.join(bad)}. Use the encoder "
            f"{meta.get('encoder', {}).get('ref')!r} and LLM {meta.get('llm', {}).get('ref')!r} "
            "named in speechllm_config.json"
        )


def _compare_provenance(meta: dict[str, Any], model, folder: Path) -> None:
    for side in ("encoder", "llm"):
        saved, now = meta.get(side, {}), model.bases.get(side, {})
        for key in ("sha256", "commit"):
            if saved.get(key) and now.get(key) and saved[key] != now[key]:
                log.warning(
                    "%s: the %s %s differs from the one the checkpoint was saved with (%s %s vs %s); "
                    "outputs may differ", folder, side, now.get("ref"), key, now[key][:12], saved[key][:12],
                )


def checkpoint_model_config(path: str | os.PathLike, meta: dict[str, Any] | None = None, *,
                            llm: str | None = None):
    """The :class:`~speechllm.config.ModelConfig` a checkpoint was trained with (read from its
    JSON, nothing loaded): what ``load_checkpoint`` rebuilds and ``train --init-from`` trains."""
    from speechllm.config import ModelConfig, from_dict
    from speechllm.errors import ConfigError

    folder = Path(path)
    meta = meta if meta is not None else read_checkpoint_config(folder)
    model_meta = dict(meta["model"])
    if meta.get("format_version", 0) < 2:
        for key, value in _FORMAT_1_MODEL.items():
            model_meta.setdefault(key, value)
    if model_meta.get("trust_remote_code"):  # a file may ask; only the user can allow it
        from speechllm.utils.remote_code import trust_remote_code

        trust_remote_code(True, source=str(folder / CONFIG_FILE), model=str(llm or model_meta.get("llm")))
    try:
        config = from_dict(ModelConfig, model_meta, source=str(folder / CONFIG_FILE))
    except ConfigError as e:
        raise CheckpointError(f"{folder / CONFIG_FILE}: {e}") from None
    config.encoder_layers = list(meta.get("encoder_layers") or config.encoder_layers or []) or None
    return config


def _load_llm_params(model, path: Path, trainable: bool) -> None:
    """Copy the LLM weights trained in place into the base LLM (by name); ``trainable`` unfreezes
    them again (resume, init_from)."""
    import torch
    from safetensors.torch import load_file

    problem = safetensors_problem(path)
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}, but the config says LLM weights were trained; copy it with "
                              "the checkpoint")
    params = dict(model.base_causal_lm().named_parameters())
    state = load_file(str(path))
    model.llm_base_values = {n: params[n].detach().clone() for n in state if n in params}
    for name, value in state.items():
        p = params.get(name)
        if p is None or tuple(p.shape) != tuple(value.shape):
            raise CheckpointError(f"{path}: weight {name} {tuple(value.shape)} has no place of that shape in the LLM")
        with torch.no_grad():
            p.copy_(value.to(p.dtype))
        p.requires_grad_(trainable)


def _load_prompt(model, path: Path, name: str = "prompt_embeddings", what: str = "prompt",
                 field: str = "model.prompt_tuning") -> None:
    """Copy the saved prompt-tuning virtual tokens (or, by ``name``, prefix-tuning keys/values)
    into ``model`` (built with the same count)."""
    import torch
    from safetensors.torch import load_file

    problem = safetensors_problem(path)
    if problem:
        raise CheckpointError(f"{path}: {problem}, but the config says a {what} was trained; copy the file with "
                              "the checkpoint")
    saved = load_file(str(path)).get(name)
    param = getattr(model, name)
    if saved is None or param is None or saved.shape != param.shape:
        raise CheckpointError(f"{path}: holds no {what} of the shape {field} gives; re-save the checkpoint")
    with torch.no_grad():
        param.copy_(saved)


def load_checkpoint(cls, path, *, device="cpu", dtype=None, encoder=None, llm=None,
                    trainable=False, verify_hashes=True, llm_device=None):
    """Rebuild ``cls`` (``SpeechLLM``) from a checkpoint folder; see the module docstring.
    ``llm_device``: see ``SpeechLLM.from_pretrained``."""
    from safetensors.torch import load_file


    folder = Path(path)
    meta = read_checkpoint_config(folder)
    config = checkpoint_model_config(folder, meta, llm=llm)
    lora_trained = "lora" in meta.get("trained", [])
    config.lora.enabled = False  # LoRA comes from the saved folder, not fresh
    from speechllm.llm_runtime import resolve_device, torch_dtype

    device = resolve_device(device)
    # Built on the CPU, then moved: `auto` still resolves for the device the model will run on.
    dtype = torch_dtype(dtype if dtype is not None else config.dtype, device)
    model = cls._load_frozen(config, device="cpu", dtype=dtype, seed=0, encoder_ref=encoder, llm_ref=llm,
                             llm_device="meta" if llm_device == "meta" else None)
    _check_shapes(meta, model, folder)
    try:
        state = load_file(str(folder / ADAPTER_FILE))
    except Exception as e:
        raise CheckpointError(f"{folder / ADAPTER_FILE}: unreadable ({e}); re-save the checkpoint") from None
    try:
        model.adapter.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{folder / ADAPTER_FILE}: does not fit the {config.adapter} adapter ({e})") from None
    if lora_trained:
        from peft import PeftModel

        with warnings.catch_warnings():  # on a meta LLM nothing is copied, by design (FSDP2 fills it)
            warnings.filterwarnings("ignore", message=".*to a meta parameter in the current model, which is a no-op")
            model.llm = PeftModel.from_pretrained(model.llm, str(folder / LORA_DIR), is_trainable=trainable)
        model.config.lora.enabled = True
    if "llm_params" in meta.get("trained", []):
        _load_llm_params(model, folder / LLM_PARAMS_FILE, trainable)  # on meta: shapes checked, nothing copied
    if "prompt" in meta.get("trained", []):
        _load_prompt(model, folder / PROMPT_FILE)
    if "prefix" in meta.get("trained", []):
        _load_prompt(model, folder / PREFIX_FILE, "prefix_kv", "prefix", "model.prefix_tuning")
    if not trainable:
        model.adapter.requires_grad_(False)
        for p in (model.prompt_embeddings, model.prefix_kv):
            if p is not None:
                p.requires_grad_(False)
        model.eval()
    if verify_hashes:
        _compare_provenance(meta, model, folder)
    if llm_device is None:
        return model.to(device)
    model.adapter.to(device)  # SpeechLLM.to would move the LLM (and the encoder to the LLM's device)
    model.encoder.to(device)
    if llm_device != "meta":
        model.llm.to(llm_device)
    return model
