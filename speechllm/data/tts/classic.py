"""flite and espeak-ng (Debian packages): the robotic subset of the synthetic corpus.

Both are deterministic command-line programs; rate and pitch are engine settings.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from speechllm.data.tts.base import SynthError, Voice

ENGINES = ("flite", "espeak-ng")
APT_PACKAGES = {"flite": "flite", "espeak-ng": "espeak-ng"}
ESPEAK_DEFAULT_SPEED = 175  # words per minute
ESPEAK_DEFAULT_PITCH = 50  # 0-99


def check_installed(engines: tuple[str, ...] = ENGINES) -> None:
    """Raise :class:`SynthError` naming the apt package for each missing TTS binary."""
    missing = [e for e in engines if shutil.which(e) is None]
    if missing:
        pkgs = " ".join(APT_PACKAGES[e] for e in missing)
        raise SynthError(
            f"TTS binary not found: {', '.join(missing)}; install it with: apt-get install {pkgs}"
        )


def synthesize(voice: Voice, text: str, *, rate: float | None = None,
               pitch: float | None = None) -> tuple[np.ndarray, int, list[str]]:
    """(mono float32, sample rate, the command's settings args) for flite or espeak-ng.

    flite: ``rate`` is ``duration_stretch``, ``pitch`` is ``int_f0_target_mean`` (Hz);
    espeak-ng: ``rate`` is ``-s`` (words/min), ``pitch`` is ``-p`` (0-99).
    """
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="speechllm-tts-") as tmp:
        out_wav = Path(tmp) / "tts.wav"
        if voice.engine == "flite":
            settings: list[str] = []
            if rate is not None:
                settings += ["--setf", f"duration_stretch={rate:.4f}"]
            if pitch is not None:
                settings += ["--setf", f"int_f0_target_mean={pitch:.1f}"]
            cmd = ["flite", "-voice", voice.name, *settings, "-t", text, "-o", str(out_wav)]
        elif voice.engine == "espeak-ng":
            speed = ESPEAK_DEFAULT_SPEED if rate is None else int(rate)
            pitch_value = ESPEAK_DEFAULT_PITCH if pitch is None else int(pitch)
            settings = ["-s", str(speed), "-p", str(pitch_value)]
            cmd = ["espeak-ng", "-v", voice.name, *settings, "-w", str(out_wav), text]
        else:
            raise SynthError(f"voice {voice.id}: engine {voice.engine!r} is not flite or espeak-ng")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise SynthError(
                f"{voice.engine} not found; install it with: apt-get install {APT_PACKAGES[voice.engine]}"
            ) from None
        if proc.returncode != 0 or not out_wav.is_file():
            raise SynthError(f"{' '.join(cmd[:4])} ... failed: {proc.stderr.strip()[:300]}")
        data, sr = sf.read(str(out_wav), dtype="float32", always_2d=True)
    return data.mean(axis=1), int(sr), settings
