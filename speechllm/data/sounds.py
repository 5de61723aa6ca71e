"""Non-speech sounds, background noise at a chosen SNR, and simulated rooms with their C50.

Everything is generated from a seeded :class:`numpy.random.Generator`, so the same seed gives
the same samples. Each non-speech generator returns the clip and the words that describe it
(``sound``), which become the row's label: the description says what the clip is, not that it
has a speaker.

Kinds (:data:`SOUND_KINDS`): coloured noise (white, pink, brown), a steady tone, beeps, DTMF
(telephone keypad) digits, simple synthetic music (a melody of plucked or organ-like notes over
a bass), electrical hum, frequency sweeps (chirps), a siren-like wail and clock-like clicks.
:data:`HELDOUT_SOUND_KINDS` are made only for the test split, so a probe can ask about sounds
of a kind the model never heard in training.

Rooms come from pyroomacoustics' image-source model (a shoebox room with a target RT60 and
random source and microphone positions); the C50 (clarity: energy in the first 50 ms after the
direct sound over the energy after it, in dB) is computed from the impulse response actually
used, and binned into :data:`REVERB_NAMES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from speechllm.errors import SpeechLLMError

SAMPLE_RATE = 16_000


class SoundError(SpeechLLMError):
    """A non-speech kind, noise type or room that cannot be made."""


# --------------------------------------------------------------------------- coloured noise
def coloured_noise(rng: np.random.Generator, n: int, colour: str) -> np.ndarray:
    """Unit-RMS noise with a power spectrum of 1/f^alpha: white 0, pink 1, brown 2."""
    alpha = {"white": 0.0, "pink": 1.0, "brown": 2.0}.get(colour)
    if alpha is None:
        raise SoundError(f"unknown noise colour {colour!r}; known: white, pink, brown")
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    spectrum *= f ** (-alpha / 2)
    x = np.fft.irfft(spectrum, n)
    x -= x.mean()
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


def hum(rng: np.random.Generator, n: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and its odd harmonics, with a little noise."""
    t = np.arange(n) / sr
    base = 50.0 if rng.random() < 0.5 else 60.0
    x = sum(np.sin(2 * np.pi * base * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3, 5, 7))
    x = x + 0.02 * rng.standard_normal(n)
    return _unit(x)


# --------------------------------------------------------------------------- tonal sounds
def _unit(x: np.ndarray) -> np.ndarray:
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


def _fade(x: np.ndarray, sr: int, seconds: float = 0.01) -> np.ndarray:
    k = min(int(seconds * sr), x.size // 2)
    if k > 0:
        ramp = np.linspace(0.0, 1.0, k)
        x[:k] *= ramp
        x[-k:] *= ramp[::-1]
    return x


def tone(rng: np.random.Generator, n: int, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, str]:
    f = float(np.exp(rng.uniform(np.log(200.0), np.log(2000.0))))
    t = np.arange(n) / sr
    return _unit(_fade(np.sin(2 * np.pi * f * t), sr)), "a steady tone"


def beeps(rng: np.random.Generator, n: int, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, str]:
    f = float(rng.choice([500.0, 800.0, 1000.0, 1200.0, 2000.0]))
    on, period = rng.uniform(0.08, 0.3), 0.0
    period = on + rng.uniform(0.15, 0.7)
    x = np.zeros(n)
    t = np.arange(int(on * sr)) / sr
    burst = _fade(np.sin(2 * np.pi * f * t), sr, 0.005)
    for start in range(int(rng.uniform(0.1, 0.4) * sr), n - burst.size, int(period * sr)):
        x[start:start + burst.size] += burst
    return _unit(x), "beeping"


DTMF_ROWS = (697.0, 770.0, 852.0, 941.0)
DTMF_COLS = (1209.0, 1336.0, 1477.0)


def _events(rng: np.random.Generator, n: int, sr: int, first: tuple[float, float], length: tuple[float, float],
            gap: tuple[float, float], event: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Faded events one after another with silent gaps, until the next would not fit in ``n``.

    Ranges are in seconds. The generator is drawn in this order, which a corpus's bytes depend on:
    the first onset, then per event its length, ``event(t)``'s own draws, and the gap after it."""
    x = np.zeros(n)
    pos = int(rng.uniform(*first) * sr)
    while True:
        size = int(rng.uniform(*length) * sr)
        if pos + size >= n:
            return x
        x[pos:pos + size] = _fade(event(np.arange(size) / sr), sr, 0.005)
        pos += size + int(rng.uniform(*gap) * sr)


def dtmf(rng: np.random.Generator, n: int, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, str]:
    def key(t: np.ndarray) -> np.ndarray:
        lo, hi = DTMF_ROWS[rng.integers(4)], DTMF_COLS[rng.integers(3)]
        return np.sin(2 * np.pi * lo * t) + np.sin(2 * np.pi * hi * t)

    return _unit(_events(rng, n, sr, (0.1, 0.3), (0.08, 0.2), (0.06, 0.25), key)), "telephone keypad tones"


def music(rng: np.random.Generator, n: int, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, str]:
    """A melody on a major or minor scale with a bass note per bar: plucked or organ-like."""
    scale = (0, 2, 4, 5, 7, 9, 11, 12) if rng.random() < 0.5 else (0, 2, 3, 5, 7, 8, 10, 12)
    root = 220.0 * 2 ** (rng.integers(-3, 5) / 12)
    beat = 60.0 / rng.uniform(80, 160)
    plucked = rng.random() < 0.5
    x = np.zeros(n)
    pos, step = 0, int(rng.integers(0, len(scale)))
    while pos < n:
        length = int(beat * float(rng.choice([0.5, 1.0, 1.0, 2.0])) * sr)
        step = int(np.clip(step + rng.integers(-2, 3), 0, len(scale) - 1))
        f = root * 2 ** (scale[step] / 12)
        t = np.arange(min(length, n - pos)) / sr
        env = np.exp(-t * 6.0) if plucked else np.minimum(1.0, t / 0.03) * 0.8
        note = sum(np.sin(2 * np.pi * f * h * t) / h ** 1.5 for h in (1, 2, 3, 4))
        x[pos:pos + t.size] += _fade(env * note, sr, 0.005)
        pos += length
    bar = int(4 * beat * sr)
    for start in range(0, n, bar):
        t = np.arange(min(bar, n - start)) / sr
        f = root / 2 * 2 ** (float(rng.choice([0, 5, 7])) / 12)
        x[start:start + t.size] += 0.5 * _fade(np.exp(-t * 2.0) * np.sin(2 * np.pi * f * t), sr, 0.005)
    return _unit(x), "music"


def chirps(rng: np.random.Generator, n: int, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, str]:
    def sweep(t: np.ndarray) -> np.ndarray:
        f0, f1 = np.exp(rng.uniform(np.log(300), np.log(6000), size=2))
        freq = f0 * (f1 / f0) ** (t / t[-1])
        return np.sin(2 * np.pi * np.cumsum(freq) / sr)

    return _unit(_events(rng, n, sr, (0.05, 0.3), (0.05, 0.4), (0.05, 0.5), sweep)), "frequency sweeps (chirps)"


def siren(rng: np.random.Generator, n: int, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, str]:
    t = np.arange(n) / sr
    centre, depth, rate = rng.uniform(600, 1000), rng.uniform(200, 400), rng.uniform(0.3, 1.5)
    freq = centre + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    return _unit(_fade(np.sin(2 * np.pi * np.cumsum(freq) / sr), sr)), "a wailing siren"


def clicks(rng: np.random.Generator, n: int, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, str]:
    x = np.zeros(n)
    period = int(rng.uniform(0.25, 1.0) * sr)
    click = np.exp(-np.arange(int(0.01 * sr)) / (0.0015 * sr)) * rng.standard_normal(int(0.01 * sr))
    for start in range(int(rng.uniform(0.05, 0.3) * sr), n - click.size, period):
        x[start:start + click.size] += click
    return _unit(x), "regular clicks, like a clock ticking"


def _noise_kind(colour: str) -> Callable[[np.random.Generator, int, int], tuple[np.ndarray, str]]:
    def make(rng: np.random.Generator, n: int, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, str]:
        return coloured_noise(rng, n, colour), f"{colour} noise"
    return make


SOUND_KINDS: dict[str, Callable[..., tuple[np.ndarray, str]]] = {
    "white_noise": _noise_kind("white"),
    "pink_noise": _noise_kind("pink"),
    "brown_noise": _noise_kind("brown"),
    "hum": lambda rng, n, sr=SAMPLE_RATE: (hum(rng, n, sr), "an electrical hum"),
    "tone": tone,
    "beeps": beeps,
    "dtmf": dtmf,
    "music": music,
    "chirps": chirps,
    "siren": siren,
    "clicks": clicks,
}
#: Made only for the test split: sounds of a kind never heard in training.
HELDOUT_SOUND_KINDS = ("chirps", "siren", "clicks")
#: Background noises mixed under speech (``noise`` label: the words after "with").
NOISE_TYPES = {"white_noise": "white noise", "pink_noise": "pink noise", "brown_noise": "brown noise",
               "hum": "an electrical hum"}


def make_sound(kind: str, rng: np.random.Generator, seconds: float, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, str]:
    """(unit-RMS clip, the words that describe it) of one non-speech ``kind``."""
    if kind not in SOUND_KINDS:
        raise SoundError(f"unknown non-speech kind {kind!r}; known: {', '.join(SOUND_KINDS)}")
    return SOUND_KINDS[kind](rng, int(round(seconds * sr)), sr)


def make_noise(kind: str, rng: np.random.Generator, n: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Unit-RMS background noise of ``kind`` (a key of :data:`NOISE_TYPES`), ``n`` samples."""
    if kind not in NOISE_TYPES:
        raise SoundError(f"unknown noise type {kind!r}; known: {', '.join(NOISE_TYPES)}")
    wave, _ = SOUND_KINDS[kind](rng, n, sr)
    return wave


# --------------------------------------------------------------------------- mixing
def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``speech + g * noise`` with g chosen so that active-speech power over noise power is ``snr_db``.

    Speech power is measured over its active frames (:func:`measures.active_level_dbfs`, the
    level the volume label uses), so leading silence does not change the SNR.
    """
    from speechllm.audio import measures

    if noise.size < speech.size:
        noise = np.resize(noise, speech.size)
    noise = noise[:speech.size].astype(np.float64)
    speech_power = 10 ** (measures.active_level_dbfs(speech, sr) / 10)
    noise_power = float(np.mean(noise ** 2)) + 1e-20
    gain = math.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))
    return (speech + gain * noise).astype(np.float32)


# --------------------------------------------------------------------------- rooms and C50
#: C50 bins: below 5 dB the reverberation is strong (far from the microphone in a live room),
#: above 15 dB slight (close, or a dry room).
C50_STRONG_BELOW = 5.0
C50_SLIGHT_ABOVE = 15.0
REVERB_NAMES = ("strong", "moderate", "slight")


def reverberation_bin(c50_db: float) -> str:
    """``strong`` / ``moderate`` / ``slight`` reverberation from C50 in dB."""
    if c50_db < C50_STRONG_BELOW:
        return REVERB_NAMES[0]
    if c50_db > C50_SLIGHT_ABOVE:
        return REVERB_NAMES[2]
    return REVERB_NAMES[1]


def c50_db(rir: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Clarity C50 of an impulse response, in dB.

    The direct sound is the largest sample; the early part starts 2.5 ms before it (the
    simulator's fractional-delay filter rings before the peak) and ends 50 ms after it.
    """
    h = np.asarray(rir, dtype=np.float64)
    peak = int(np.argmax(np.abs(h)))
    start = max(0, peak - int(0.0025 * sr))
    split = peak + int(0.05 * sr)
    early = float(np.sum(h[start:split] ** 2))
    late = float(np.sum(h[split:] ** 2))
    return 10 * math.log10(max(early, 1e-20) / max(late, 1e-20))


@dataclass(frozen=True)
class Room:
    """A simulated shoebox room and the impulse response from source to microphone."""

    dims: tuple[float, float, float]
    rt60: float
    source: tuple[float, float, float]
    mic: tuple[float, float, float]
    rir: np.ndarray

    @property
    def c50(self) -> float:
        return c50_db(self.rir)

    @property
    def distance(self) -> float:
        return float(np.linalg.norm(np.subtract(self.source, self.mic)))


def random_room(rng: np.random.Generator, sr: int = SAMPLE_RATE, *, rt60_range: tuple[float, float] = (0.2, 1.2),
                max_order: int = 30) -> Room:
    """A shoebox room (3-12 m by 3-10 m by 2.4-4 m, RT60 drawn from ``rt60_range``) with source and
    microphone at least 0.5 m from the walls and 0.5-5 m apart; its impulse response."""
    try:
        import pyroomacoustics as pra
    except ImportError:
        raise SoundError("reverberation needs pyroomacoustics; install it with: pip install pyroomacoustics "
                         "(or bash scripts/install.sh)") from None
    dims = (rng.uniform(3, 12), rng.uniform(3, 10), rng.uniform(2.4, 4.0))
    rt60 = float(rng.uniform(*rt60_range))
    absorption, order = pra.inverse_sabine(rt60, list(dims))
    margin = 0.5
    for _ in range(100):
        src = tuple(rng.uniform(margin, d - margin) for d in dims[:2]) + (rng.uniform(1.2, 1.9),)
        mic = tuple(rng.uniform(margin, d - margin) for d in dims[:2]) + (rng.uniform(0.8, 1.6),)
        if 0.5 <= float(np.linalg.norm(np.subtract(src, mic))) <= 5.0:
            break
    room = pra.ShoeBox(list(dims), fs=sr, materials=pra.Material(absorption), max_order=min(order, max_order))
    room.add_source(list(src))
    room.add_microphone(list(mic))
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float64)
    return Room(tuple(round(d, 3) for d in dims), round(rt60, 3), tuple(round(s, 3) for s in src),
                tuple(round(m, 3) for m in mic), rir)


def reverberate(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``wave`` convolved with ``rir``, cut to its length plus the tail, the direct sound aligned at 0
    and the direct path's gain normalised to 1 (so the level change is the room's, not the distance's)."""
    from scipy.signal import fftconvolve

    peak = int(np.argmax(np.abs(rir)))
    h = rir[max(0, peak - int(0.0025 * SAMPLE_RATE)):] / abs(rir[peak])
    tail = int(0.3 * SAMPLE_RATE)
    return fftconvolve(wave.astype(np.float64), h)[: wave.size + tail].astype(np.float32)
