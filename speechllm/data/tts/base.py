"""What every TTS engine shares: the voice record, the error type, and the synthesis cache."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speechllm.errors import SpeechLLMError


class SynthError(SpeechLLMError):
    """The synthetic corpus cannot be built (missing TTS binary or package, sentence file, bad arguments)."""


#: Engines whose voices are neural and sound like a person (the rest are the robotic subset).
NATURAL_ENGINES = ("kokoro", "piper")


@dataclass(frozen=True)
class Voice:
    """A TTS voice: ``id`` is the speaker id written to the manifest.

    ``name`` is what the engine is given (flite ``-voice NAME``, espeak-ng ``-v NAME``, a Kokoro
    voice pack, a Piper voice). Kokoro voices may blend several packs (``blend``: (pack, weight)
    pairs) and read phonemes of one ``language`` (``en-us``/``en-gb``). ``warp`` != 1 resamples
    the output so that F0 and formants move together by that factor (a longer or shorter vocal
    tract, as in Kaldi's speed perturbation), with the tempo restored by the engine's speed.

    A gender-converted voice (``source_gender`` set) is the engine's ``source_gender`` voice with
    its formants scaled by ``formant_shift`` and its F0 moved into ``gender``'s range (Praat's
    "Change gender"): it gives the corpus more speakers of each gender than the packs have.
    """

    id: str
    engine: str  # "flite" | "espeak-ng" | "kokoro" | "piper"
    name: str
    gender: str
    accent: str
    heldout: bool
    pitch_control: bool = True
    language: str = ""
    blend: tuple[tuple[str, float], ...] = ()
    warp: float = 1.0
    formant_shift: float = 1.0
    source_gender: str = ""

    @property
    def engine_gender(self) -> str:
        """The gender of the voice the engine speaks with (before any conversion)."""
        return self.source_gender or self.gender

    @property
    def natural(self) -> bool:
        """A neural voice (Kokoro, Piper), as opposed to the robotic flite/espeak-ng subset."""
        return self.engine in NATURAL_ENGINES


def default_cache_dir() -> Path:
    """``$SPEECHLLM_HOME/cache/tts`` (default ``~/.cache/speechllm/cache/tts``)."""
    from speechllm.assets.registry import cache_dir

    return cache_dir() / "cache" / "tts"


class TtsCache:
    """Raw engine output keyed by everything that decides it (engine version, voice, text, speed).

    Neural TTS runs at about real time on one core, so a corpus is synthesised once; later
    builds (another seed of noise and rooms, another split) read the cache. Files are written
    atomically, so parallel workers can share one cache folder.
    """

    def __init__(self, folder: str | os.PathLike | None):
        self.folder = Path(folder) if folder is not None else None

    def key(self, voice: Voice, text: str, settings: dict[str, Any], engine_version: str) -> str:
        # The engine's output does not depend on the conversion applied after it: a converted voice
        # shares its source voice's entries (and the keys of unconverted voices are unchanged).
        engine_voice = {k: v for k, v in asdict(voice).items() if k not in ("formant_shift", "source_gender")}
        engine_voice |= {"id": None, "heldout": None, "gender": voice.engine_gender}
        blob = json.dumps({"voice": engine_voice, "text": text,
                           "settings": settings, "engine": engine_version}, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]

    def get(self, key: str) -> tuple[np.ndarray, int] | None:
        if self.folder is None:
            return None
        path = self.folder / key[:2] / f"{key}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                return z["wave"].astype(np.float32), int(z["sample_rate"])
        except (OSError, ValueError, KeyError):  # a damaged entry is re-made, not fatal
            return None

    def put(self, key: str, wave: np.ndarray, sample_rate: int) -> None:
        if self.folder is None:
            return
        path = self.folder / key[:2] / f"{key}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, wave=wave.astype(np.float32), sample_rate=np.int64(sample_rate))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
