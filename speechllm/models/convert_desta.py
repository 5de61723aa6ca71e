"""Released DeSTA2 and DeSTA2.5 weights as speechllm checkpoints (``speechllm convert``).

- DeSTA2 releases ``qformer_connector.pth`` (the Q-Former connector's ``state_dict``) beside a
  ``config.json`` naming ``whisper_model_id``, ``llama_model_id`` and ``prompt_size``. It is read
  with ``torch.load(weights_only=True)``: tensors only, never pickled code.
- DeSTA2.5 releases ``model.safetensors`` (its trainable weights: ``perception.connector.*`` and,
  when it was trained with LoRA, ``llm_model.*.lora_{A,B}.default.weight``) beside a ``config.json``
  naming ``encoder_model_id``, ``llm_model_id``, ``qformer_num_hidden_layers``, ``prompt_size``,
  ``use_lora`` and ``target_layer_ids``.

The mapping is mechanical: one ``(1, prompt_size, d)`` ``layer_prompts.i`` per tap becomes one
``queries`` tensor ``(taps, prompt_size, d)``; ``layer_weights`` is ``layer_logits``; BERT's
sub-layer names become the Q-Former's (:data:`BERT_NAMES`); ``proj.0`` / ``proj.1`` (LayerNorm,
Linear) are ``norm`` / ``proj``; LoRA weights keep their place in the LLM under peft's prefix.
Every source key must land somewhere and every adapter weight must be filled, else the
conversion stops naming the keys.

The model settings that reproduce each DeSTA model's forward (:data:`DESTA_MODEL_SETTINGS`) are
the ones the two DeSTA recipes under ``recipes/`` hold (a test checks that they agree); the
converted checkpoint records them, so ``speechllm-infer`` and ``eval`` run the model as DeSTA
runs it. docs/model.md lists what is reproduced and what deliberately differs.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechllm.errors import SpeechLLMError

log = logging.getLogger(__name__)

KINDS = ("desta2", "desta25")

# ModelConfig settings that make speechllm run each DeSTA model as its public code does.
DESTA_MODEL_SETTINGS: dict[str, dict[str, Any]] = {
    "desta2": {
        "adapter": "qformer",
        "tap_point": "hidden_states",  # HF's hidden_states tuple from whisper.generate
        "num_queries": 64,
        "qformer_layers": 2,
        "qformer_ffn_dim": 3072,
        "qformer_context": "window",  # every frame of the 30 s window, padding included
        "qformer_init": "pytorch",
        "frame_norm": "none",
        "transcript_source": "whisper",
        "max_transcript_tokens": 448,  # DeSTA2 does not cut the transcript (Whisper's limit: 448)
        "transcript_prefix": " ",  # Whisper's decoded text starts with a space; DeSTA2 keeps it
        "no_speech_transcript": "",
        "use_vad": False,  # DeSTA2 runs no VAD
        "vad_on_given_transcripts": False,
        "audio_locator": "<|AUDIO|>",
        "audio_start": "",
        "audio_end": "",
        "audio_role": "audio",  # {"role": "audio", "content": <audio>} before the user turn
        "dtype": "bf16",
    },
    "desta25": {
        "adapter": "qformer",
        "tap_point": "block_output",  # forward_whisper: raw block outputs, no closing LayerNorm
        "num_queries": 64,
        "qformer_layers": 6,
        "qformer_ffn_dim": 3072,
        "qformer_context": "window",
        "qformer_init": "pytorch",
        "frame_norm": "none",
        "transcript_source": "whisper",
        "max_transcript_tokens": 100,  # DeSTA2.5's training cut; its inference does not cut
        "transcript_prefix": "",  # the ASR text is stripped
        "no_speech_transcript": " ",  # no speech: a one-space transcript (span 64 + 1)
        "use_vad": True,
        "vad_on_given_transcripts": True,  # a given transcript is replaced too when VAD hears nothing
        "audio_locator": "<|AUDIO|>",
        "audio_start": "<start_audio>",
        "audio_end": "<end_audio>",
        "audio_role": None,
        "dtype": "bf16",
    },
}

# DeSTA2.5's LoRA (modeling_desta25.py builds it with these constants).
DESTA25_LORA = {"alpha": 16, "dropout": 0.1}

# BERT sub-layer (transformers' BertLayer with cross-attention) -> QFormerLayer attribute.
BERT_NAMES: dict[str, str] = {
    "attention.self.query": "self_attn.q",
    "attention.self.key": "self_attn.k",
    "attention.self.value": "self_attn.v",
    "attention.output.dense": "self_attn.out",
    "attention.output.LayerNorm": "self_norm",
    "crossattention.self.query": "cross_attn.q",
    "crossattention.self.key": "cross_attn.k",
    "crossattention.self.value": "cross_attn.v",
    "crossattention.output.dense": "cross_attn.out",
    "crossattention.output.LayerNorm": "cross_norm",
    "intermediate.dense": "ffn_in",
    "output.dense": "ffn_out",
    "output.LayerNorm": "ffn_norm",
}
_BERT_KEY = re.compile(r"^qformer\.layer\.(\d+)\.(.+)\.(weight|bias)$")
_PROMPT_KEY = re.compile(r"^layer_prompts\.(\d+)$")
_LORA_KEY = re.compile(r"^llm_model\.(.+\.lora_[AB])\.default\.weight$")
_DESTA25_PREFIX = "perception.connector."


class ConvertError(SpeechLLMError):
    """A DeSTA release that cannot be converted (missing files, unknown keys, mismatching bases)."""


@dataclass
class DestaRelease:
    """What a DeSTA release holds, in speechllm's names.

    ``adapter_state``: the Q-Former's ``state_dict`` in :class:`~speechllm.models.adapters.
    QFormerAdapter` names; ``lora_state``: LoRA weights keyed as in the LLM's module tree (``model.
    layers.0.self_attn.q_proj.lora_A``); ``source_config``: the release's ``config.json`` (or {})."""

    kind: str
    adapter_state: dict[str, Any]
    lora_state: dict[str, Any] = field(default_factory=dict)
    source_config: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    @property
    def num_taps(self) -> int:
        return int(self.adapter_state["queries"].shape[0])

    @property
    def num_queries(self) -> int:
        return int(self.adapter_state["queries"].shape[1])

    @property
    def qformer_layers(self) -> int:
        return 1 + max(int(k.split(".")[1]) for k in self.adapter_state if k.startswith("layers."))

    @property
    def qformer_ffn_dim(self) -> int:
        return int(self.adapter_state["layers.0.ffn_in.weight"].shape[0])

    @property
    def lora_rank(self) -> int | None:
        ranks = {int(v.shape[0]) for k, v in self.lora_state.items() if k.endswith("lora_A")}
        if len(ranks) > 1:
            raise ConvertError(f"{self.files[0]}: LoRA weights of different ranks {sorted(ranks)}")
        return ranks.pop() if ranks else None

    @property
    def lora_targets(self) -> list[str]:
        return sorted({k.split(".")[-2] for k in self.lora_state})


def map_connector_state(state: dict[str, Any], where: str) -> dict[str, Any]:
    """DeSTA's ``QformerConnector`` state (no prefix) -> the Q-Former adapter's state.

    Raises :class:`ConvertError` naming any key that has no place, or missing prompts."""
    import torch

    out: dict[str, Any] = {}
    prompts: dict[int, Any] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if m := _PROMPT_KEY.match(key):
            prompts[int(m.group(1))] = value
        elif key == "layer_weights":
            out["layer_logits"] = value
        elif m := _BERT_KEY.match(key):
            layer, sub, kind = m.groups()
            if sub not in BERT_NAMES:
                unknown.append(key)
                continue
            out[f"layers.{layer}.{BERT_NAMES[sub]}.{kind}"] = value
        elif key.startswith("proj.0."):
            out["norm." + key[len("proj.0."):]] = value
        elif key.startswith("proj.1."):
            out["proj." + key[len("proj.1."):]] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConvertError(f"{where}: keys that are not part of DeSTA's Q-Former connector: "
                           f"{', '.join(sorted(unknown)[:6])}{' ...' if len(unknown) > 6 else ''}")
    if not prompts or sorted(prompts) != list(range(len(prompts))):
        raise ConvertError(f"{where}: layer_prompts.0..N-1 expected, found indices {sorted(prompts)}")
    if "layer_logits" not in out:
        raise ConvertError(f"{where}: no layer_weights (the per-query layer mix); not a DeSTA connector")
    # Each (1, prompt_size, d) prompt is one tap's queries.
    out["queries"] = torch.cat([prompts[i].reshape(1, *prompts[i].shape[-2:]) for i in range(len(prompts))])
    return out


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConvertError(f"{path}: unreadable ({e}); fix or remove it and give --encoder/--llm") from None
    if not isinstance(data, dict):
        raise ConvertError(f"{path}: expected a JSON object")
    return data


def read_release(kind: str, src: str | Path) -> DestaRelease:
    """Read a DeSTA2 (``qformer_connector.pth``, or a folder holding it) or DeSTA2.5 (a folder
    with ``model.safetensors``, or that file) release into speechllm's names."""
    if kind not in KINDS:
        raise ConvertError(f"unknown DeSTA kind {kind!r}; known: {', '.join(KINDS)}")
    path = Path(src).expanduser()
    weights_name = "qformer_connector.pth" if kind == "desta2" else "model.safetensors"
    weights = path / weights_name if path.is_dir() else path
    if not weights.is_file():
        raise ConvertError(f"{weights}: missing; {kind} releases ship {weights_name} (give that file or its folder)")
    config = _read_config(weights.parent)
    if kind == "desta2":
        import pickle

        import torch

        try:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
            raise ConvertError(f"{weights}: not a tensor-only PyTorch state dict ({str(e).splitlines()[0]})") from None
        if not isinstance(state, dict):
            raise ConvertError(f"{weights}: holds a {type(state).__name__}, not a state dict")
        adapter = map_connector_state(state, str(weights))
        return DestaRelease(kind, adapter, {}, config, [str(weights)])
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise ConvertError(f"{weights}: unreadable or truncated safetensors ({e})") from None
    connector = {k[len(_DESTA25_PREFIX):]: v for k, v in state.items() if k.startswith(_DESTA25_PREFIX)}
    lora: dict[str, Any] = {}
    unknown = []
    for key, value in state.items():
        if key.startswith(_DESTA25_PREFIX):
            continue
        if m := _LORA_KEY.match(key):
            lora[m.group(1)] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConvertError(f"{weights}: weights that are neither the connector nor LoRA: "
                           f"{', '.join(sorted(unknown)[:6])}{' ...' if len(unknown) > 6 else ''}")
    if not connector:
        raise ConvertError(f"{weights}: no {_DESTA25_PREFIX}* weights; not a DeSTA2.5 checkpoint")
    if config.get("use_lora") is False and lora:
        raise ConvertError(f"{weights}: LoRA weights but config.json says use_lora: false")
    if config.get("use_lora") and not lora:
        raise ConvertError(f"{weights}: config.json says use_lora: true but the file holds no LoRA weights")
    return DestaRelease(kind, map_connector_state(connector, str(weights)), lora, config, [str(weights)])


def release_model_config(release: DestaRelease, *, encoder: str | None = None, llm: str | None = None,
                         encoder_layers: list[int] | None = None):
    """The :class:`~speechllm.config.ModelConfig` that runs ``release`` as DeSTA does. Base models
    come from the flags, else from the release's ``config.json``; taps from the flag, else the
    config's ``target_layer_ids``, else DeSTA's per-size taps (chosen when the encoder loads)."""
    from speechllm.config import ModelConfig, from_dict

    cfg = release.source_config
    ids = ("whisper_model_id", "llama_model_id") if release.kind == "desta2" else ("encoder_model_id", "llm_model_id")
    settings = dict(DESTA_MODEL_SETTINGS[release.kind])
    for name, flag, key in (("encoder", encoder, ids[0]), ("llm", llm, ids[1])):
        value = flag or cfg.get(key)
        if not value:
            raise ConvertError(f"{release.files[0]}: no {key} in config.json beside it; give --{name}")
        settings[name] = value
    prompt_size = cfg.get("prompt_size")
    if prompt_size is not None and int(prompt_size) != release.num_queries:
        raise ConvertError(f"{release.files[0]}: config.json says prompt_size {prompt_size} but the "
                           f"weights hold {release.num_queries} queries per tap")
    settings.update(num_queries=release.num_queries, qformer_layers=release.qformer_layers,
                    qformer_ffn_dim=release.qformer_ffn_dim)
    taps = encoder_layers or cfg.get("target_layer_ids")
    settings["encoder_layers"] = [int(t) for t in taps] if taps else None
    if release.lora_state:
        settings["lora"] = {"enabled": True, "r": release.lora_rank, "target_modules": release.lora_targets,
                            **DESTA25_LORA}
    return from_dict(ModelConfig, settings, source=f"{release.kind} release {release.files[0]}")


def convert_release(kind: str, src: str | Path, out: str | Path, *, encoder: str | None = None,
                    llm: str | None = None, encoder_layers: list[int] | None = None,
                    dtype: str | None = None, overwrite: bool = False):
    """Convert a DeSTA release into a speechllm checkpoint folder ``out``; returns the model.

    The frozen bases are loaded (their shapes are checked against the weights, and the checkpoint
    records their references and hashes, as every checkpoint does)."""
    import torch

    from speechllm.models.speech_llm import SpeechLLM

    out = Path(out)
    if out.exists() and not overwrite:
        raise ConvertError(f"{out} already exists; pass --overwrite to replace it")
    release = read_release(kind, src)
    config = release_model_config(release, encoder=encoder, llm=llm, encoder_layers=encoder_layers)
    model = SpeechLLM.from_config(config, dtype=dtype)
    spec = model.adapter.spec
    if spec.num_taps != release.num_taps:
        raise ConvertError(
            f"{release.files[0]}: {release.num_taps} layer prompts, but the taps are {model.encoder.layers} "
            f"for this {model.encoder.num_layers}-block encoder; give the release's taps with --encoder-layers")
    want = {k: tuple(v.shape) for k, v in model.adapter.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in release.adapter_state.items()}
    bad = [f"{k} {have.get(k)} vs {want.get(k)}" for k in sorted(set(want) | set(have)) if have.get(k) != want.get(k)]
    if bad:
        raise ConvertError(
            f"{release.files[0]}: the weights do not fit encoder {config.encoder} (d_model {spec.encoder_dim}) "
            f"and LLM {config.llm} (width {spec.llm_dim}): {'; '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}")
    with torch.no_grad():
        model.adapter.load_state_dict({k: v.float() for k, v in release.adapter_state.items()}, strict=True)
    if release.lora_state:
        _load_lora(model, release)
    model.save_pretrained(out, overwrite=True)
    log.info("converted %s %s -> %s (taps %s, %s)", kind, release.files[0], out, model.encoder.layers,
             f"LoRA r={release.lora_rank}" if release.lora_state else "no LoRA")
    return model


def _load_lora(model, release: DestaRelease) -> None:
    """Copy DeSTA2.5's LoRA weights into the peft-wrapped LLM (same module tree, peft's prefix)."""
    import torch

    params = dict(model.llm.named_parameters())
    missing = [n for n in params if ".lora_" in n]
    for key, value in release.lora_state.items():
        name = f"base_model.model.{key}.default.weight"
        target = params.get(name)
        if target is None:
            raise ConvertError(f"{release.files[0]}: LoRA weight llm_model.{key} has no place in LLM "
                               f"{model.config.llm}; is it the LLM the release was trained on?")
        if tuple(target.shape) != tuple(value.shape):
            raise ConvertError(f"{release.files[0]}: LoRA weight llm_model.{key} is {tuple(value.shape)}, "
                               f"the LLM's is {tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(value.to(target.dtype))
        missing.remove(name)
    if missing:
        raise ConvertError(f"{release.files[0]}: no LoRA weights for {', '.join(missing[:4])}"
                           f"{' ...' if len(missing) > 4 else ''}")
