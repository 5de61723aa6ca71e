"""Text-to-speech engines of the synthetic corpus, one module each.

- :mod:`~speechllm.data.tts.classic`: flite and espeak-ng (Debian), the robotic subset;
- :mod:`~speechllm.data.tts.kokoro`: Kokoro-82M speaking English from espeak-ng phonemes;
- :mod:`~speechllm.data.tts.piper`: Piper's ``en_US-joe-medium`` voice.

:func:`synthesize_natural` is the one entry for the neural voices: speed, vocal-tract warp,
resampling to 16 kHz and the synthesis cache.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import combinations

import numpy as np

from speechllm.data.tts.base import NATURAL_ENGINES, SynthError, TtsCache, Voice, default_cache_dir

__all__ = ["NATURAL_ENGINES", "SynthError", "TtsCache", "Voice", "check_natural_installed",
           "default_cache_dir", "natural_voices", "set_median_f0", "synthesize_natural"]

#: Vocal-tract warps of every natural voice: +-8% moves F0 and formants together (a male voice
#: stays male, a female one female: kumo's 91 Hz becomes 84-98 Hz, the female packs stay above
#: 215 Hz) and gives the few packs more speakers.
WARPS = (0.92, 1.0, 1.08)
#: Held out of training: one female pack (and every blend with it) and the Piper voice (a
#: different engine as well as a different speaker).
HELDOUT_PACKS = ("jf_tebukuro",)
HELDOUT_ENGINES = ("piper",)
#: Formant scaling of a gender-converted voice (Praat's "Change gender", F0 moved into the other
#: gender's range): adult male vocal tracts are ~15% longer. The packs hold one male voice, and a
#: model trained on it learns that voice rather than "male" (egs/mini/RESULTS.md); the female
#: packs made male, and kumo made female, give each gender the same number of speakers.
CONVERTED_FORMANT_SHIFT = {"male": 0.85, "female": 1 / 0.85}


def natural_voices() -> list[Voice]:
    """Kokoro (five packs and the 50/50 blends of two female packs, en-us and en-gb phonemes) and
    Piper joe, each also gender-converted, each at every warp of :data:`WARPS`, in a fixed order.

    Female+female blends keep a clean female voice; male+female blends land at an ambiguous pitch
    and are not made. A converted voice's id ends in ``-as-male``/``-as-female``; it is held out
    where its source is.
    """
    from speechllm.data.tts import kokoro

    females = [p for p, g in kokoro.PACKS.items() if g == "female"]
    styles: list[tuple[tuple[tuple[str, float], ...], str]] = [(((p, 1.0),), g) for p, g in kokoro.PACKS.items()]
    styles += [(((a, 0.5), (b, 0.5)), "female") for a, b in combinations(females, 2)]
    kokoro_voices = [
        Voice(id=f"kokoro-{language}-{'+'.join(p for p, _ in blend)}{_warp_suffix(warp)}", engine="kokoro",
              name=blend[0][0], gender=gender, accent=accent, heldout=any(p in HELDOUT_PACKS for p, _ in blend),
              pitch_control=False, language=language, blend=blend if len(blend) > 1 else (), warp=warp)
        for language, accent in kokoro.LANGUAGES.items() for blend, gender in styles for warp in WARPS]
    piper_voices = [Voice(id=f"piper-joe{_warp_suffix(warp)}", engine="piper", name="joe", gender="male",
                          accent="American", heldout="piper" in HELDOUT_ENGINES, pitch_control=False,
                          language="en-us", warp=warp) for warp in WARPS]
    return [*kokoro_voices, *map(_converted, kokoro_voices), *piper_voices, *map(_converted, piper_voices)]


def _warp_suffix(warp: float) -> str:
    return "" if warp == 1.0 else f"-w{warp:g}"


def _converted(voice: Voice) -> Voice:
    """``voice`` speaking as the other gender: ``-as-<gender>`` before the id's warp suffix."""
    gender = "male" if voice.gender == "female" else "female"
    stem = voice.id.removesuffix(_warp_suffix(voice.warp))
    return replace(voice, id=f"{stem}-as-{gender}{_warp_suffix(voice.warp)}", gender=gender,
                   formant_shift=CONVERTED_FORMANT_SHIFT[gender], source_gender=voice.gender)


def check_natural_installed(engines: tuple[str, ...] = NATURAL_ENGINES) -> None:
    """Raise :class:`SynthError` with the install command for each missing natural engine."""
    from speechllm.data.tts import kokoro, piper

    for engine in engines:
        {"kokoro": kokoro, "piper": piper}[engine].check_installed()


def synthesize_natural(voice: Voice, text: str, *, speed: float = 1.0, cache: TtsCache | None = None,
                       sample_rate: int = 16_000) -> np.ndarray:
    """``text`` spoken by a Kokoro or Piper voice at ``speed``, warped, at ``sample_rate``.

    The engine runs at ``speed / warp`` so that the warp (which shortens the clip by its factor)
    leaves the requested tempo. The engine's raw output is cached by (engine version, voice,
    phonemes or text, engine speed).
    """
    from speechllm.audio import resample
    from speechllm.data.tts import kokoro, piper

    cache = cache or TtsCache(None)
    engine_speed = round(speed / voice.warp, 4)
    if voice.engine == "kokoro":
        source, version = kokoro.english_phonemes(text, voice.language), kokoro.engine_version()
    elif voice.engine == "piper":
        source, version = text, piper.engine_version()
    else:
        raise SynthError(f"voice {voice.id}: {voice.engine} is not a natural engine ({', '.join(NATURAL_ENGINES)})")
    key = cache.key(voice, source, {"speed": engine_speed}, version)
    hit = cache.get(key)
    if hit is None:
        if voice.engine == "kokoro":
            wave, sr = kokoro.synthesize(voice, source, speed=engine_speed)
        else:
            wave, sr = piper.synthesize(voice, source, speed=engine_speed)
        cache.put(key, wave, sr)
    else:
        wave, sr = hit
    # Played back at sr * warp: every frequency (F0 and formants) times warp, duration / warp.
    return resample(wave, sr * voice.warp, sample_rate) if voice.warp != 1.0 else resample(wave, sr, sample_rate)


def set_median_f0(wave: np.ndarray, sample_rate: int, target_hz: float, gender: str, *, seed: int = 0,
                  formant_shift: float = 1.0) -> np.ndarray:
    """``wave`` with its median F0 moved to ``target_hz`` by Praat's PSOLA ("Change gender"), the
    intonation's shape kept (pitch range factor 1) and the formants scaled by ``formant_shift``.

    ``gender`` is the speaker's in ``wave`` (it sets the pitch analysis range). Praat places
    random pulses in unvoiced stretches; its generator is seeded with ``seed`` first, so the same
    input gives the same samples.
    """
    import parselmouth
    from parselmouth.praat import call, run

    floor, ceiling = (60.0, 300.0) if gender == "male" else (100.0, 500.0)
    run(f"random_initializeWithSeedUnsafelyButPredictably ({int(seed)})")
    sound = parselmouth.Sound(wave.astype(np.float64), sample_rate)
    out = call(sound, "Change gender", floor, ceiling, float(formant_shift), float(target_hz), 1.0, 1.0)
    return np.asarray(out.values[0], dtype=np.float32)
