"""The two measurements behind docs/model.md's encoder and frame-normalisation paragraphs.

1. **Padding.** Whisper's encoder attends over the whole 30 s window, so the states of the real
   frames depend on the zero-padded tail. Runs the encoder on a clip's window padded to 30 s and on
   the same log-mel frames cut to the clip's length (position embeddings sliced, as a
   "no padding" encoder would do), and reports, per tap and for the final output, the relative L2
   difference ``||a - b|| / ||a||`` over the real frames and their mean cosine.
2. **Frame normalisation at initialisation.** A fresh Q-Former (seeded) reads each clip's taps
   with and without ``frame_norm: global`` (statistics fitted on the same clips); reports how much
   its output varies across clips: the mean over clips of ``||out_i - mean|| / ||mean||``.

    OMP_NUM_THREADS=1 python benchmarks/encoder_inputs.py [--encoder offline:whisper-tiny.en]
        [--clip tests/data/audio/3436-172162-0000.ogg] [--seconds 10] [--clips tests/data/audio/*.ogg]
"""

from __future__ import annotations

import argparse
import glob
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def padding_effect(encoder, wave: np.ndarray) -> list[tuple[str, float, float]]:
    """(name, relative L2 difference, mean cosine) per tap and for the final output."""
    from speechllm.models.encoder import encoder_frames

    real = encoder_frames(len(wave))
    mel = encoder.mel([wave])  # (1, n_mels, 3000): the window zero-padded to 30 s
    with torch.inference_mode():
        padded, padded_final = encoder.forward_mel(mel, need_final=True)
        cut, cut_final = encoder.forward_mel(mel[:, :, : 2 * real], need_final=True)
    rows = []
    names = [f"tap {i}" for i in encoder.layers] + ["final"]
    for name, a, b in zip(names, [*padded, padded_final], [*cut, cut_final], strict=True):
        a, b = a[0, :real].float(), b[0, :real].float()
        rows.append((name, float((a - b).norm() / a.norm()),
                     float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())))
    return rows


def frame_norm_variation(encoder, waves: list[np.ndarray], seed: int = 0) -> dict[str, float]:
    """Relative variation of a fresh Q-Former's output across clips, without and with frame_norm."""
    from speechllm.config import ModelConfig
    from speechllm.models.adapters import AdapterSpec, build_adapter

    spec = AdapterSpec(encoder_dim=encoder.d_model, encoder_heads=encoder.num_heads,
                       num_taps=len(encoder.layers), llm_dim=576)
    encoded = encoder.encode(waves)
    out = {}
    for norm in ("none", "global"):
        cfg = ModelConfig(frame_norm=norm, qformer_context="valid")
        torch.manual_seed(seed)
        adapter = build_adapter("qformer", spec, cfg).eval()
        if adapter.frame_norm is not None:
            adapter.frame_norm.accumulate(encoded.taps, encoded.valid_frames)
            adapter.frame_norm.finish()
        with torch.inference_mode():
            vectors, _ = adapter([t.float() for t in encoded.taps], encoded.valid_frames)
        per_clip = vectors.flatten(1)  # one window per clip
        mean = per_clip.mean(0)
        out[norm] = float(((per_clip - mean).norm(dim=1) / mean.norm()).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="offline:whisper-tiny.en")
    ap.add_argument("--clip", default=str(ROOT / "tests/data/audio/3436-172162-0000.ogg"))
    ap.add_argument("--seconds", type=float, default=10.0, help="first seconds of --clip (the rest is padding)")
    ap.add_argument("--clips", nargs="*", default=sorted(glob.glob(str(ROOT / "tests/data/audio/*.ogg"))),
                    help="clips whose adapter outputs are compared (first 30 s of each)")
    args = ap.parse_args()

    from speechllm.audio import load_audio
    from speechllm.models.encoder import WhisperTapEncoder, default_encoder_layers, load_whisper

    whisper, extractor, tokenizer, _ = load_whisper(args.encoder, dtype=torch.float32)
    layers = default_encoder_layers(whisper.config.encoder_layers)
    encoder = WhisperTapEncoder(whisper, extractor, tokenizer, layers)
    wave = load_audio(args.clip, duration=args.seconds)
    print(f"padding: {args.encoder}, fp32, first {args.seconds:g} s of {Path(args.clip).name} "
          f"(+{30 - args.seconds:g} s padding), taps {layers}")
    for name, rel, cos in padding_effect(encoder, wave):
        print(f"  {name:8s} relative L2 difference {100 * rel:5.1f} %   mean cosine {cos:.3f}")
    waves = [load_audio(c, duration=30.0) for c in args.clips]
    var = frame_norm_variation(encoder, waves)
    print(f"frame_norm at initialisation, {len(waves)} clips ({', '.join(Path(c).name for c in args.clips)}): "
          f"output varies {100 * var['none']:.1f} % relative across clips without it, "
          f"{100 * var['global']:.1f} % with it")


if __name__ == "__main__":
    main()
