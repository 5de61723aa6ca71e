"""Signal measures shared by the annotators and the synthetic corpus (numpy only, fast).

All functions take mono float32 audio in [-1, 1] and its sample rate. Levels are in dBFS with the
RMS convention of a full-scale *square* wave = 0 dBFS (a full-scale sine measures -3 dBFS).
The synthetic corpus calibrates its TTS settings with these same functions, so a label it writes
("fast", "high", "loud") is the bin these measures give under the default thresholds.
"""

from __future__ import annotations

import re

import numpy as np

from speechllm.errors import SpeechLLMError

FRAME_SECONDS = 0.025
HOP_SECONDS = 0.010
_EPS = 1e-12


def frame_powers(wave: np.ndarray, sample_rate: int, frame_seconds: float = FRAME_SECONDS,
                 hop_seconds: float = HOP_SECONDS) -> np.ndarray:
    """Mean-square power of each frame (25 ms frames every 10 ms by default)."""
    frame = max(1, int(round(frame_seconds * sample_rate)))
    hop = max(1, int(round(hop_seconds * sample_rate)))
    x = np.asarray(wave, dtype=np.float32)
    if x.size < frame:
        return np.array([float(np.mean(x.astype(np.float64) ** 2)) if x.size else 0.0])
    # Cumulative sum of squares: every frame's power in O(n) without materialising frames.
    c = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    starts = np.arange(0, x.size - frame + 1, hop)
    return (c[starts + frame] - c[starts]) / frame


def power_to_db(power: float) -> float:
    return float(10.0 * np.log10(max(power, _EPS)))


def active_level_dbfs(wave: np.ndarray, sample_rate: int, floor_db: float = 40.0) -> float:
    """RMS level in dBFS of the active part: frames within ``floor_db`` of the loudest frame.

    Leading and trailing silence would otherwise make a short loud word read as quiet.
    """
    p = frame_powers(wave, sample_rate)
    peak = float(p.max())
    if peak <= _EPS:
        return power_to_db(0.0)
    active = p[p >= peak * 10 ** (-floor_db / 10)]
    return power_to_db(float(active.mean()))


def energy_speech_span(wave: np.ndarray, sample_rate: int, floor_db: float = 35.0) -> tuple[float, float]:
    """(start, end) in seconds of the first and last frame within ``floor_db`` of the loudest one.

    A crude speech span for clean audio (TTS); the VAD annotator gives a better one for real audio.
    """
    p = frame_powers(wave, sample_rate)
    peak = float(p.max())
    if peak <= _EPS:
        return 0.0, 0.0
    idx = np.flatnonzero(p >= peak * 10 ** (-floor_db / 10))
    start = idx[0] * HOP_SECONDS
    end = min(idx[-1] * HOP_SECONDS + FRAME_SECONDS, wave.size / sample_rate)
    return float(start), float(end)


def percentile_snr_db(wave: np.ndarray, sample_rate: int, noise_percentile: float = 10.0,
                      max_db: float = 60.0) -> float:
    """SNR estimate from frame energies: the quietest ``noise_percentile`` % of frames are taken
    as noise, frames above the median as speech + noise.

    Read speech has pauses, so the quietest frames are noise alone; speech that never pauses reads
    noisier than it is. The result is clipped to ``[-10, max_db]`` (digital silence would give
    infinity).
    """
    p = np.sort(frame_powers(wave, sample_rate))
    n_noise = max(1, int(len(p) * noise_percentile / 100))
    noise = float(p[:n_noise].mean())
    loud = float(p[len(p) // 2:].mean())
    signal = max(loud - noise, _EPS)
    if noise <= _EPS:
        return max_db
    return float(np.clip(10 * np.log10(signal / noise), -10.0, max_db))


_VOWEL_GROUPS = re.compile(r"[aeiouy]+")


def count_syllables(text: str) -> int:
    """Syllables of English text by vowel groups (silent final 'e' dropped, '-le' kept).

    Within about 10% of dictionary counts on read sentences: enough for slow/normal/fast bins.
    """
    total = 0
    for word in re.findall(r"[a-z]+", text.lower()):
        groups = _VOWEL_GROUPS.findall(word)
        n = len(groups)
        # A final lone 'e' after a consonant is silent ("axe", "stone"), except "-le" ("table").
        if n > 1 and groups[-1] == "e" and word.endswith("e") and not word.endswith("le"):
            n -= 1
        total += max(1, n)
    return total


def count_words(text: str) -> int:
    return len(re.findall(r"[A-Za-z0-9']+", text))


PITCH_ANALYSIS_RATE = 4000  # Hz: F0 lives below 500 Hz; a 2 kHz band is plenty and 4x cheaper


def pitch_track(wave: np.ndarray, sample_rate: int, floor_hz: float = 60.0,
                ceiling_hz: float = 500.0, time_step: float = 0.02) -> np.ndarray:
    """F0 in Hz every ``time_step`` seconds (0 where unvoiced), Praat's autocorrelation method.

    The audio is first resampled to 4 kHz: medians move by under 1.5% against the full band,
    and the estimate runs at ~750x real time on one core (``librosa.pyin`` is two orders of
    magnitude slower).
    """
    try:
        import parselmouth
    except ImportError:
        raise SpeechLLMError(
            "pitch needs praat-parselmouth, a dependency of speechllm: pip install praat-parselmouth "
            "(or reinstall with bash scripts/install.sh)"
        ) from None
    x = np.asarray(wave, dtype=np.float32)
    rate = sample_rate
    if sample_rate > PITCH_ANALYSIS_RATE and ceiling_hz * 4 <= PITCH_ANALYSIS_RATE:
        from speechllm.audio import resample

        x, rate = resample(x, sample_rate, PITCH_ANALYSIS_RATE), PITCH_ANALYSIS_RATE
    sound = parselmouth.Sound(x.astype(np.float64), sampling_frequency=rate)
    pitch = sound.to_pitch_ac(time_step=time_step, pitch_floor=floor_hz, pitch_ceiling=ceiling_hz)
    return np.asarray(pitch.selected_array["frequency"], dtype=np.float64)


def median_f0(wave: np.ndarray, sample_rate: int, floor_hz: float = 60.0,
              ceiling_hz: float = 500.0) -> tuple[float | None, float]:
    """(median F0 of voiced frames or None, voiced fraction of frames)."""
    f0 = pitch_track(wave, sample_rate, floor_hz, ceiling_hz)
    voiced = f0[f0 > 0]
    if voiced.size == 0:
        return None, 0.0
    return float(np.median(voiced)), float(voiced.size / max(1, f0.size))
