"""Reference outputs of DeSTA2's and DeSTA2.5's own code on tiny random weights, for the tests.

The project holds none of DeSTA's code. This script imports it from local clones of the two public
repositories, runs it, and writes what went in and what came out to one safetensors file, which
``tests/test_desta_reference.py`` reads: speechllm must reproduce the outputs from the same
weights (converted by ``speechllm convert``) and the same audio.

How ``tests/data/desta_reference.safetensors`` was made (DeSTA2.5's code needs transformers 4.x:
under 5.x its ``forward_whisper`` indexes the wrong tensor, so it runs in a venv of its own)::

    python3 -m venv /tmp/desta-venv
    /tmp/desta-venv/bin/pip install torch==2.13.0 transformers==4.53.3 peft==0.17.1 \\
        safetensors numpy soundfile librosa
    git clone https://github.com/kehanlu/DeSTA2 /tmp/desta2-src            # 2d6b2bcdf764223b...
    git clone https://github.com/kehanlu/DeSTA2.5-Audio /tmp/desta25-src   # 5503dfcb8c07ddc6...
    /tmp/desta-venv/bin/python benchmarks/desta_reference_fixtures.py \\
        --desta2 /tmp/desta2-src --desta25 /tmp/desta25-src \\
        --out tests/data/desta_reference.safetensors

What runs, per model (everything seeded; no network: the hub ids DeSTA's code asks for are served
from tiny local folders made here):

- Inputs: two 16 kHz clips cut from ``tests/data/audio`` (resampled by librosa, stored as int16
  and used as ``int16 / 32768`` by both sides): ``short`` (4 s: one window, zero-padded to 30 s)
  and ``long`` (35 s: DeSTA's feature extractor keeps its first 30 s; speechllm cuts two windows).
- DeSTA2 (``desta/modeling_desta.py``): its ``QformerConnector`` for ``openai/whisper-small``
  (taps 2, 5, 8, 11 of HF's ``hidden_states``) on a 12-block random Whisper (d_model 16, 2 heads),
  fed ``encoder(mel, output_hidden_states=True).hidden_states`` as its ``SpeechPerception`` feeds
  it the same tuple from ``whisper.generate``. Saved: the connector's ``state_dict()`` (what
  ``qformer_connector.pth`` holds), its outputs, and taps 2, 5, 8, 11 (every 10th frame).
- DeSTA2.5 (``desta/models/modeling_desta25.py``): ``DeSTA25AudioModel`` with
  ``encoder_model_id=openai/whisper-large-v3`` (taps 7, 15, 23, 31 as raw block outputs) on a
  32-block random Whisper (128 mel bins), a 6-layer Q-Former, LoRA on (r 16, alpha 16) over a tiny
  random Llama; cast to fp32. Saved: what its ``save_pretrained`` writes (``config.json``,
  ``model.safetensors``: connector + LoRA), ``WhisperPerception.forward_whisper`` outputs, the
  block outputs it tapped (forward hooks, every 10th frame), and the LLM logits of
  ``DeSTA25AudioModel.forward`` for one token sequence with the short clip's 64 vectors and a
  6-token transcript placed at a start position.

Random weights are rounded to fp16-representable values before anything runs, so they are stored
as fp16 and lose nothing; outputs are stored in fp32. Linear layers keep PyTorch's default init
(as DeSTA does); the layer mixing logits and LoRA B (zero at init) get random values so that they
are exercised. Also recorded: how much DeSTA2's audio loading (``librosa.load`` at 22.05 kHz, then
``librosa.resample`` to 16 kHz) changes a 16 kHz clip.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
AUDIO = REPO / "tests" / "data" / "audio"
SR = 16_000
PROMPT_SIZE = 64
FRAME_STEP = 10  # taps are stored at every 10th encoder frame (150 of 1500)

WHISPER_SMALL_LIKE = dict(d_model=16, encoder_layers=12, heads=2, mels=80)  # DeSTA2: whisper-small taps
WHISPER_LARGE_LIKE = dict(d_model=16, encoder_layers=32, heads=2, mels=128)  # DeSTA2.5: whisper-large-v3 taps
LLAMA = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
             rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True)


def _git_head(path: Path) -> str:
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def _clips() -> dict[str, np.ndarray]:
    """``short`` (4 s) and ``long`` (35 s) int16 clips at 16 kHz from the LibriSpeech test clips."""
    import librosa

    names = ["198-209-0000.ogg", "3436-172162-0000.ogg", "5703-47212-0000.ogg"]
    waves = [librosa.load(str(AUDIO / n), sr=SR)[0] for n in names]
    joined = np.concatenate(waves)
    assert len(joined) >= 35 * SR, "the three clips are shorter than 35 s"

    def q(x: np.ndarray) -> np.ndarray:
        return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)

    return {"short": q(waves[0][: 4 * SR]), "long": q(joined[: 35 * SR])}


def _resampling_figure(wave16k: np.ndarray) -> dict[str, float]:
    """DeSTA2's ``load_audio`` on a 16 kHz file: ``librosa.load`` (to 22.05 kHz) then
    ``librosa.resample`` back to 16 kHz. Returns the change against reading it at 16 kHz."""
    import librosa
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.wav"
        sf.write(str(path), wave16k, SR, subtype="PCM_16")
        direct = sf.read(str(path), dtype="float32")[0]
        audio, ori_sr = librosa.load(str(path))
        via = librosa.resample(audio, orig_sr=ori_sr, target_sr=SR)
    n = min(len(direct), len(via))
    err = via[:n] - direct[:n]
    return {"samples_direct": len(direct), "samples_desta2": len(via),
            "max_abs_diff": float(np.abs(err).max()),
            "snr_db": float(10 * np.log10(np.sum(direct[:n] ** 2) / np.sum(err ** 2)))}


def _round_fp16_(module: torch.nn.Module) -> None:
    """Round every float parameter and buffer to an fp16-representable value, in place."""
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.is_floating_point():
                t.copy_(t.to(torch.float16).to(t.dtype))


def _save_whisper(folder: Path, d_model: int, encoder_layers: int, heads: int, mels: int, seed: int) -> None:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=51865, num_mel_bins=mels, d_model=d_model, encoder_layers=encoder_layers,
        decoder_layers=1, encoder_attention_heads=heads, decoder_attention_heads=heads,
        encoder_ffn_dim=4 * d_model, decoder_ffn_dim=4 * d_model, max_source_positions=1500,
        max_target_positions=448)
    torch.manual_seed(seed)
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=mels).save_pretrained(folder)


def _save_llama(folder: Path, seed: int) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    LlamaForCausalLM(LlamaConfig(**LLAMA, bos_token_id=1, eos_token_id=2, pad_token_id=0)).save_pretrained(folder)


class _LocalHub:
    """Serves ``from_pretrained(hub_id)`` from a local folder (DeSTA's code names hub ids)."""

    def __init__(self, cls, folders: dict[str, Path]):
        self.cls, self.folders = cls, folders

    def from_pretrained(self, ref, *args, **kwargs):
        kwargs.pop("cache_dir", None)
        kwargs.pop("token", None)
        return self.cls.from_pretrained(str(self.folders.get(ref, ref)), *args, **kwargs)


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mel(folder: Path, waves: list[np.ndarray]) -> torch.Tensor:
    """Log-mel features as DeSTA computes them: the Whisper processor's defaults (30 s, padded
    or truncated)."""
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor.from_pretrained(str(folder))
    return fe(waves, sampling_rate=SR, return_tensors="pt").input_features


def run_desta2(clone: Path, tmp: Path, waves: dict[str, np.ndarray], out: dict[str, torch.Tensor]) -> dict:
    from transformers import AutoConfig

    whisper_dir, llm_dir = tmp / "whisper-small-like", tmp / "llama"
    _save_whisper(whisper_dir, seed=1, **WHISPER_SMALL_LIKE)
    hub = {"openai/whisper-small": whisper_dir, "meta-llama/Meta-Llama-3-8B-Instruct": llm_dir}
    mod = _load_module("desta2_modeling", clone / "desta" / "modeling_desta.py")
    mod.AutoConfig = _LocalHub(AutoConfig, hub)
    cfg = mod.Desta2Config(llama_model_id="meta-llama/Meta-Llama-3-8B-Instruct",
                           whisper_model_id="openai/whisper-small", prompt_size=PROMPT_SIZE)
    torch.manual_seed(2)
    connector = mod.QformerConnector(cfg)
    with torch.no_grad():
        connector.layer_weights.normal_()  # zero at init: give the layer mix something to do
    _round_fp16_(connector)
    connector.eval()

    from transformers import WhisperForConditionalGeneration

    whisper = WhisperForConditionalGeneration.from_pretrained(str(whisper_dir)).eval()
    _round_fp16_(whisper)
    names = list(waves)
    mel = _mel(whisper_dir, [waves[n].astype(np.float32) / 32768.0 for n in names])
    with torch.no_grad():
        hidden = whisper.model.encoder(mel, output_hidden_states=True).hidden_states
        result = connector(hidden)
    for i, n in enumerate(names):
        out[f"desta2.out.{n}"] = result[i].contiguous()
    taps = connector.target_layer_ids
    out["desta2.taps.short"] = torch.stack([hidden[t][names.index("short"), ::FRAME_STEP] for t in taps]).contiguous()
    for k, v in connector.state_dict().items():
        out[f"desta2.src.{k}"] = v.to(torch.float16).contiguous()
    for k, v in whisper.model.encoder.state_dict().items():
        out[f"desta2.whisper.{k}"] = v.to(torch.float16).contiguous()
    source_config = {"llama_model_id": cfg.llama_model_id, "whisper_model_id": cfg.whisper_model_id,
                     "prompt_size": cfg.prompt_size}
    return {"config": source_config, "taps": list(taps),
            "whisper": json.loads((whisper_dir / "config.json").read_text()),
            "feature_size": WHISPER_SMALL_LIKE["mels"]}


def run_desta25(clone: Path, tmp: Path, waves: dict[str, np.ndarray], out: dict[str, torch.Tensor]) -> dict:
    sys.path.insert(0, str(clone))
    import desta.models.modeling_desta25 as mod
    from transformers import AutoConfig, AutoModelForCausalLM, WhisperForConditionalGeneration

    whisper_dir, llm_dir = tmp / "whisper-large-like", tmp / "llama"
    _save_whisper(whisper_dir, seed=3, **WHISPER_LARGE_LIKE)
    hub = {"openai/whisper-large-v3": whisper_dir, "DeSTA-ntu/Llama-3.1-8B-Instruct": llm_dir}
    mod.AutoConfig = _LocalHub(AutoConfig, hub)
    mod.AutoModelForCausalLM = _LocalHub(AutoModelForCausalLM, hub)
    mod.WhisperForConditionalGeneration = _LocalHub(WhisperForConditionalGeneration, hub)
    config = mod.DeSTA25Config(llm_model_id="DeSTA-ntu/Llama-3.1-8B-Instruct",
                               encoder_model_id="openai/whisper-large-v3", qformer_num_hidden_layers=6,
                               prompt_size=PROMPT_SIZE, use_lora=True)
    torch.manual_seed(4)
    model = mod.DeSTA25AudioModel(config)
    model.float().eval()  # DeSTA loads the LLM in bf16; fp32 here so the comparison is exact
    with torch.no_grad():
        model.perception.connector.layer_weights.normal_()
        for name, p in model.llm_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)  # zero at init: make LoRA change the output
    _round_fp16_(model)

    encoder = model.perception.whisper.model.encoder
    taps = list(model.perception.connector.config.target_layer_ids)
    captured: dict[int, torch.Tensor] = {}
    hooks = [encoder.layers[i].register_forward_hook(
        lambda _m, _i, output, i=i: captured.__setitem__(i, output[0])) for i in taps]
    names = list(waves)
    mel = _mel(whisper_dir, [waves[n].astype(np.float32) / 32768.0 for n in names])
    with torch.no_grad():
        result = model.perception.forward_whisper(mel)
    for h in hooks:
        h.remove()
    for i, n in enumerate(names):
        out[f"desta25.out.{n}"] = result[i].contiguous()
    out["desta25.taps.short"] = torch.stack(
        [captured[t][names.index("short"), ::FRAME_STEP] for t in taps]).contiguous()

    # The whole model's forward: text ids, 64 placeholders + 6 transcript ids at position 5.
    gen = torch.Generator().manual_seed(5)
    transcript = torch.randint(10, LLAMA["vocab_size"], (6,), generator=gen)
    placeholder = 3
    ids = torch.cat([torch.randint(10, LLAMA["vocab_size"], (5,), generator=gen),
                     torch.full((PROMPT_SIZE,), placeholder), transcript,
                     torch.randint(10, LLAMA["vocab_size"], (4,), generator=gen)])[None]
    short_mel = mel[names.index("short")][None]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), batch_features=short_mel,
                       batch_transcription_ids=[transcript[None]], batch_start_positions=[(0, 5)]).logits
    out["desta25.forward.input_ids"] = ids[0].contiguous()
    out["desta25.forward.transcript_ids"] = transcript.contiguous()
    out["desta25.forward.logits"] = logits[0].float().contiguous()

    with tempfile.TemporaryDirectory() as saved:
        model.save_pretrained(saved)  # DeSTA's own format: config.json + model.safetensors
        from safetensors.torch import load_file

        state = load_file(str(Path(saved) / "model.safetensors"))
        source_config = json.loads((Path(saved) / "config.json").read_text())
    # The nested base configs name the local folders served here; a release names the hub ids.
    source_config["encoder_config"]["_name_or_path"] = config.encoder_model_id
    source_config["llm_config"]["_name_or_path"] = config.llm_model_id
    for k, v in state.items():
        out[f"desta25.src.{k}"] = v.to(torch.float16).contiguous()
    for k, v in encoder.state_dict().items():
        out[f"desta25.whisper.{k}"] = v.to(torch.float16).contiguous()
    for k, v in model.llm_model.state_dict().items():
        if "lora_" not in k and not (k == "lm_head.weight" and LLAMA["tie_word_embeddings"]):
            out[f"llm.{k.replace('.base_layer.', '.')}"] = v.to(torch.float16).contiguous()
    return {"config": source_config, "taps": taps, "start_position": 5,
            "whisper": json.loads((whisper_dir / "config.json").read_text()),
            "feature_size": WHISPER_LARGE_LIKE["mels"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--desta2", type=Path, required=True, help="local clone of kehanlu/DeSTA2")
    ap.add_argument("--desta25", type=Path, required=True, help="local clone of kehanlu/DeSTA2.5-Audio")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "desta_reference.safetensors")
    args = ap.parse_args(argv)

    import transformers
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    clips = _clips()
    out: dict[str, torch.Tensor] = {f"wave.{k}": torch.from_numpy(v) for k, v in clips.items()}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        _save_llama(tmp / "llama", seed=0)
        meta = {
            "generator": "benchmarks/desta_reference_fixtures.py",
            "desta2_commit": _git_head(args.desta2), "desta25_commit": _git_head(args.desta25),
            "transformers": transformers.__version__, "torch": torch.__version__,
            "llama": LLAMA, "placeholder_id": 3, "frame_step": FRAME_STEP,
            "desta2": run_desta2(args.desta2, tmp, clips, out),
            "desta25": run_desta25(args.desta25, tmp, clips, out),
            "desta2_audio_loading": _resampling_figure(clips["short"].astype(np.float32) / 32768.0),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(args.out), metadata={"desta_reference": json.dumps(meta)})
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB, {len(out)} tensors)")


if __name__ == "__main__":
    main()
