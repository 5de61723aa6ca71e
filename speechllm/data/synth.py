"""The offline synthetic corpus: Harvard sentences spoken by flite and espeak-ng voices.

Every utterance gets a voice, a speaking-rate bin, a pitch bin and a volume bin, drawn from a
random generator seeded by ``(seed, split, index)``; the same ``num``/``seed`` therefore gives the
same manifest and the same audio bytes (both TTS engines are deterministic), whatever the number of
worker processes.

Labels are written with provenance ``corpus`` and come from the settings actually used: each voice
says each sentence once at its defaults (F0 and syllable rate measured with
:mod:`speechllm.audio.measures`),
the TTS settings are chosen to hit the bin's target, and the label is the bin of the value those
settings are expected to give (so a setting clipped at the engine's limit is labelled by where it
lands, not by what was asked). Pitch and rate changes are never labelled as emotions.

Split design (see docs/synthetic-corpus.md): sentences are split 80/10/10 into train/dev/test
pools, so no test or dev sentence is ever heard in training. Some voices (flite ``kal16`` and the
espeak-ng variants ``+f4`` and ``+m6`` in every accent) are held out: they appear only in test, in
half of its rows, so test measures both unseen sentences (all rows) and unseen voices
(``synth.heldout_voice`` true).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speechllm.audio import measures
from speechllm.config.describe import (
    PITCH_NAMES,
    RATE_NAMES,
    SNR_NAMES,
    VOLUME_NAMES,
    PitchBins,
    SnrBins,
    SpeakingRateBins,
    VolumeBins,
    bin_value,
)
from speechllm.data.manifest import PROVENANCE_CORPUS, Utterance, write_manifest
from speechllm.data.sounds import (
    HELDOUT_SOUND_KINDS,
    NOISE_TYPES,
    SOUND_KINDS,
    make_noise,
    make_sound,
    mix_at_snr,
    random_room,
    reverberate,
    reverberation_bin,
)
from speechllm.data.tts.base import NATURAL_ENGINES, SynthError, Voice
from speechllm.data.tts.classic import (
    APT_PACKAGES,
    ESPEAK_DEFAULT_PITCH,
    ESPEAK_DEFAULT_SPEED,
)
from speechllm.data.tts.classic import check_installed as check_tts_installed

log = logging.getLogger(__name__)

__all__ = ["APT_PACKAGES", "CorpusMix", "SynthError", "Voice", "build_synthetic_corpus", "check_tts_installed",
           "list_voices", "plan_corpus", "plan_mixed_corpus", "read_sentences", "render_utterance",
           "split_sentences"]

SAMPLE_RATE = 16_000
SPLITS = ("train", "dev", "test")
SENTENCE_FRACTIONS = {"train": 0.8, "dev": 0.1, "test": 0.1}
# The 720 Harvard sentences (IEEE 1969), shipped as a package resource: see resources/corpora/SOURCES.md.
HARVARD_SENTENCES_RESOURCE = ("resources", "corpora", "harvard_sentences.txt")

# Targets per bin. Each lies well inside its bin under the default describe thresholds
# (rate: slow < 3.5 < normal < 5.5 < fast syllables/s; volume: quiet < -35 < normal < -20 < loud
# dBFS; pitch per gender: see PitchBins).
RATE_TARGETS = {"slow": 2.8, "normal": 4.4, "fast": 6.4}  # syllables/s
PITCH_TARGETS = {
    "male": {"low": 85.0, "normal": 120.0, "high": 170.0},  # Hz
    "female": {"low": 150.0, "normal": 205.0, "high": 275.0},
}
VOLUME_TARGETS = {"quiet": -42.0, "normal": -27.0, "loud": -16.0}  # dBFS, active RMS
BIN_WEIGHTS = (0.25, 0.5, 0.25)  # low / normal / high bins
FLITE_SHARE = 0.4  # flite sounds natural but has four voices; espeak-ng has 84 robotic ones
PEAK_LIMIT = 0.99  # gain is reduced so that no sample clips; the label follows the real level

# espeak-ng's F0 grows roughly exponentially with -p: measured 1.5x from p=50 to p=90 on
# several variants, i.e. one octave per ~67 steps.
ESPEAK_PITCH_STEPS_PER_OCTAVE = 67.0

ACCENTS = {
    "en-us": "American",
    "en-gb-x-rp": "British",
    "en-gb-scotland": "Scottish",
    "en-029": "Caribbean",
    "en-us-nyc": "New York",
    "en-gb-x-gbclan": "Lancashire",
    "en-gb-x-gbcwmd": "West Midlands",
}
ESPEAK_FEMALE = ("f1", "f2", "f3", "f4", "f5")
ESPEAK_MALE = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
HELDOUT_ESPEAK_VARIANTS = ("f4", "m6")


def list_voices() -> list[Voice]:
    """All voices of the corpus, in a fixed order."""
    voices = [
        Voice("flite-slt", "flite", "slt", "female", "American", False),
        # rms ignores int_f0_target_mean (measured): its pitch stays at its own default.
        Voice("flite-rms", "flite", "rms", "male", "American", False, pitch_control=False),
        Voice("flite-kal16", "flite", "kal16", "male", "American", True),
        Voice("flite-awb", "flite", "awb", "male", "Scottish", False),
    ]
    for accent_code, accent in ACCENTS.items():
        for variant in ESPEAK_FEMALE + ESPEAK_MALE:
            gender = "female" if variant.startswith("f") else "male"
            voices.append(
                Voice(
                    id=f"espeak-{accent_code}-{variant}",
                    engine="espeak-ng",
                    name=f"{accent_code}+{variant}",
                    gender=gender,
                    accent=accent,
                    heldout=variant in HELDOUT_ESPEAK_VARIANTS,
                )
            )
    return voices


def harvard_sentences() -> list[str]:
    """The 720 Harvard sentences shipped with the package (the synthetic corpus's default text)."""
    from importlib import resources

    text = resources.files("speechllm").joinpath(*HARVARD_SENTENCES_RESOURCE).read_text(encoding="utf-8")
    return _distinct_lines(text, "the packaged Harvard sentences")


def read_sentences(path: str | os.PathLike | None = None) -> list[str]:
    """Non-blank, de-duplicated lines of a sentence file, in file order (None: the Harvard sentences)."""
    if path is None:
        return harvard_sentences()
    p = Path(path)
    if not p.is_file():
        raise SynthError(
            f"sentence file {p} not found; pass --sentences FILE (one sentence a line), or leave "
            "--sentences out for the 720 Harvard sentences shipped with speechllm"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SynthError(f"{p}: not UTF-8 text (byte {e.start}); re-encode it as UTF-8") from None
    return _distinct_lines(text, str(p))


def _distinct_lines(text: str, source: str) -> list[str]:
    seen: dict[str, None] = {}
    for line in text.splitlines():
        s = " ".join(line.split())
        if s:
            seen.setdefault(s, None)
    if len(seen) < 10:
        raise SynthError(f"{source}: need at least 10 distinct sentences, found {len(seen)}")
    return list(seen)


def split_sentences(sentences: list[str], seed: int) -> dict[str, list[str]]:
    """Disjoint train/dev/test sentence pools (80/10/10), shuffled by ``seed``."""
    order = np.random.default_rng([seed, 7919]).permutation(len(sentences))
    n_dev = max(1, round(len(sentences) * SENTENCE_FRACTIONS["dev"]))
    n_test = max(1, round(len(sentences) * SENTENCE_FRACTIONS["test"]))
    test = [sentences[i] for i in order[:n_test]]
    dev = [sentences[i] for i in order[n_test:n_test + n_dev]]
    train = [sentences[i] for i in order[n_test + n_dev:]]
    return {"train": train, "dev": dev, "test": test}


def split_counts(num: int) -> dict[str, int]:
    """Utterances per split: 10% dev, 10% test (at least one each when ``num >= 3``)."""
    if num < 3:
        return {"train": num, "dev": 0, "test": 0}
    n_dev = max(1, round(num * 0.1))
    n_test = max(1, round(num * 0.1))
    return {"train": num - n_dev - n_test, "dev": n_dev, "test": n_test}


@dataclass(frozen=True)
class UtteranceSpec:
    """What to synthesise for one row (chosen in the parent; rendered in a worker).

    ``kind`` is ``speech`` (``voice`` says robotic or natural) or ``nonspeech`` (``sound`` names
    the kind of :mod:`speechllm.data.sounds`). ``noise`` (a noise type) with ``snr_bin``, and
    ``reverb``, are the acoustic conditions of a speech row; ``render_seed`` seeds every draw
    made while rendering (F0 jitter, noise samples, the room).
    """

    id: str
    split: str
    text: str
    voice: Voice | None
    rate_bin: str
    pitch_bin: str
    volume_bin: str
    kind: str = "speech"
    sound: str = ""
    noise: str = ""
    snr_bin: str = ""
    reverb: bool = False
    render_seed: int = 0
    label_speech: bool = False  # write contains_speech: true (a mixed corpus: VAD may miss speech in noise)


def plan_corpus(sentences: list[str], num: int, seed: int) -> list[UtteranceSpec]:
    """The deterministic plan: ids, splits, sentences, voices and requested bins."""
    pools = split_sentences(sentences, seed)
    voices = list_voices()
    seen_voices = [v for v in voices if not v.heldout]
    heldout_voices = [v for v in voices if v.heldout]
    specs: list[UtteranceSpec] = []
    for split_index, (split, count) in enumerate(split_counts(num).items()):
        pool = pools[split]
        for k in range(count):
            rng = np.random.default_rng([seed, split_index, k])
            # Test alternates held-out and seen voices, so both evaluations have data.
            candidates = heldout_voices if split == "test" and k % 2 == 0 else seen_voices
            engine = "flite" if rng.random() < FLITE_SHARE else "espeak-ng"
            by_engine = [v for v in candidates if v.engine == engine] or candidates
            voice = by_engine[int(rng.integers(len(by_engine)))]
            rate_bin = RATE_NAMES[int(rng.choice(3, p=BIN_WEIGHTS))]
            pitch_bin = PITCH_NAMES[int(rng.choice(3, p=BIN_WEIGHTS))]
            volume_bin = VOLUME_NAMES[int(rng.choice(3, p=BIN_WEIGHTS))]
            if not voice.pitch_control:
                pitch_bin = "normal"
            specs.append(
                UtteranceSpec(
                    id=f"synth_{split}_{k:05d}",
                    split=split,
                    text=pool[k % len(pool)],
                    voice=voice,
                    rate_bin=rate_bin,
                    pitch_bin=pitch_bin,
                    volume_bin=volume_bin,
                )
            )
    return specs


@dataclass(frozen=True)
class CorpusMix:
    """What a mixed corpus holds: shares of rows by kind, and the conditions of its speech.

    Rows are natural speech (Kokoro, Piper) with probability ``natural``, non-speech with
    probability ``nonspeech``, robotic speech (flite, espeak-ng) otherwise. Each speech row is
    mixed with background noise with probability ``noisy`` (SNR bin drawn uniformly) and put in
    a simulated room with probability ``reverb``. A natural row is spoken by a gender-converted
    voice (a pack of the other gender with its F0 and formants moved) with probability
    ``converted``: at 0.5 every source voice speaks for both genders about equally often, so a
    model cannot tell gender by who is speaking, only by how the voice sounds. Natural rows draw
    their gender 50/50; robotic rows do too with ``balance_gender`` (else a uniform voice, and
    the robotic voices are mostly male).
    """

    natural: float = 0.5
    nonspeech: float = 0.15
    noisy: float = 0.25
    reverb: float = 0.2
    converted: float = 0.0
    balance_gender: bool = False
    engines: tuple[str, ...] = ("kokoro", "piper")
    heldout_sounds: tuple[str, ...] = field(default_factory=lambda: tuple(HELDOUT_SOUND_KINDS))

    def __post_init__(self) -> None:
        for name in ("natural", "nonspeech", "noisy", "reverb", "converted"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SynthError(f"--{name} must be a share between 0 and 1, got {value}")
        if self.natural + self.nonspeech > 1.0 + 1e-9:
            raise SynthError(f"--natural ({self.natural}) + --nonspeech ({self.nonspeech}) exceed 1: "
                             "the rest of the rows are robotic speech")
        unknown = [e for e in self.engines if e not in NATURAL_ENGINES]
        if unknown:
            raise SynthError(f"unknown natural engine {', '.join(unknown)}; known: {', '.join(NATURAL_ENGINES)}")
        bad = [k for k in self.heldout_sounds if k not in SOUND_KINDS]
        if bad:
            raise SynthError(f"unknown non-speech kind {', '.join(bad)}; known: {', '.join(SOUND_KINDS)}")

    @property
    def is_plain(self) -> bool:
        """No natural voices, no non-speech and no conditions: the original flite/espeak-ng corpus."""
        return not (self.natural or self.nonspeech or self.noisy or self.reverb)


#: SNR (dB) drawn per bin, each well inside the describe thresholds (low < 10 < medium < 25 < high).
SNR_RANGES = {"low": (0.0, 7.0), "medium": (13.0, 22.0), "high": (28.0, 40.0)}
NONSPEECH_SECONDS = (1.5, 6.0)
NATURAL_DEFAULT_RATE = 4.5  # syllables/s of the Kokoro and Piper voices at speed 1 (measured)
NATURAL_SPEED_RANGE = (0.6, 1.5)  # outside it Kokoro drags or slurs
F0_JITTER = 0.07  # natural voices: the F0 target of a pitch bin varies by +-7%


def plan_mixed_corpus(sentences: list[str], num: int, seed: int, mix: CorpusMix) -> list[UtteranceSpec]:
    """The deterministic plan of a corpus that mixes natural, robotic and non-speech rows.

    Test rows with an even index use held-out voices (speech) or held-out kinds of sound
    (non-speech); odd test rows and every train/dev row use the others.
    """
    from speechllm.data.tts import natural_voices

    if mix.is_plain:
        return plan_corpus(sentences, num, seed)
    pools = split_sentences(sentences, seed)
    robotic = list_voices()
    natural = [v for v in natural_voices() if v.engine in mix.engines]
    train_sounds = [k for k in SOUND_KINDS if k not in mix.heldout_sounds]
    specs: list[UtteranceSpec] = []
    for split_index, (split, count) in enumerate(split_counts(num).items()):
        pool = pools[split]
        for k in range(count):
            rng = np.random.default_rng([seed, split_index, k, 19])
            heldout = split == "test" and k % 2 == 0
            u = rng.random()
            rate_bin = RATE_NAMES[int(rng.choice(3, p=BIN_WEIGHTS))]
            pitch_bin = PITCH_NAMES[int(rng.choice(3, p=BIN_WEIGHTS))]
            volume_bin = VOLUME_NAMES[int(rng.choice(3, p=BIN_WEIGHTS))]
            noisy, reverb = rng.random() < mix.noisy, rng.random() < mix.reverb
            noise = sorted(NOISE_TYPES)[int(rng.integers(len(NOISE_TYPES)))]
            snr_bin = SNR_NAMES[int(rng.integers(3))]
            render_seed = int(rng.integers(2**31))
            common = {"id": f"synth_{split}_{k:05d}", "split": split, "volume_bin": volume_bin,
                      "render_seed": render_seed, "label_speech": True}
            if u < mix.nonspeech:
                kinds = list(mix.heldout_sounds) if heldout and mix.heldout_sounds else train_sounds
                specs.append(UtteranceSpec(text="", voice=None, rate_bin="", pitch_bin="", kind="nonspeech",
                                           sound=kinds[int(rng.integers(len(kinds)))], **common))
                continue
            if u < mix.nonspeech + mix.natural and natural:
                gender = "female" if rng.random() < 0.5 else "male"
                # Drawn only when asked for, so that a corpus without converted voices is the one
                # earlier versions planned.
                converted = bool(mix.converted) and rng.random() < mix.converted
                candidates = [v for v in natural if v.heldout == heldout]
                same = [v for v in candidates if v.gender == gender]
                voice_pool = [v for v in same if bool(v.source_gender) == converted] or same or candidates or natural
            else:
                candidates = [v for v in robotic if v.heldout == heldout]
                engine = "flite" if rng.random() < FLITE_SHARE else "espeak-ng"
                voice_pool = [v for v in candidates if v.engine == engine] or candidates
                if mix.balance_gender:  # drawn only when asked for: earlier corpora keep their plan
                    gender = "female" if rng.random() < 0.5 else "male"
                    voice_pool = [v for v in voice_pool if v.gender == gender] or voice_pool
            voice = voice_pool[int(rng.integers(len(voice_pool)))]
            if voice.engine == "flite" and not voice.pitch_control:
                pitch_bin = "normal"
            specs.append(UtteranceSpec(text=pool[k % len(pool)], voice=voice, rate_bin=rate_bin, pitch_bin=pitch_bin,
                                       noise=noise if noisy else "", snr_bin=snr_bin if noisy else "",
                                       reverb=reverb, **common))
    return specs


def _run_tts(voice: Voice, text: str, out_wav: Path | None = None, *, rate: float | None = None,
             pitch: float | None = None) -> tuple[np.ndarray, list[str]]:
    """Synthesise ``text`` with flite/espeak-ng; returns (mono float32 at 16 kHz, the settings args)."""
    from speechllm.audio import resample
    from speechllm.data.tts import classic

    wave, sr, settings = classic.synthesize(voice, text, rate=rate, pitch=pitch)
    return resample(wave, sr, SAMPLE_RATE), settings


@dataclass(frozen=True)
class VoiceCalibration:
    """How a voice says one text at its default settings: median F0 (Hz) and syllable rate
    (syllables/s over the speech span)."""

    f0_hz: float
    syllables_per_s: float


def calibrate(voice: Voice, text: str, work_dir: Path) -> VoiceCalibration:
    """Synthesise ``text`` at the voice's defaults and measure it.

    Done per utterance (TTS is cheap): sentences differ in syllable density by about +-20%, so a
    per-voice figure would put many "normal" sentences into "fast" or "slow".
    """
    wave, _ = _run_tts(voice, text, work_dir / "default.wav")
    f0, _ = measures.median_f0(wave, SAMPLE_RATE)
    start, end = measures.energy_speech_span(wave, SAMPLE_RATE)
    rate = measures.count_syllables(text) / max(end - start, 1e-3)
    return VoiceCalibration(f0_hz=float(f0 or PITCH_TARGETS[voice.gender]["normal"]),
                            syllables_per_s=float(rate))


def _settings_for(spec: UtteranceSpec, calib: VoiceCalibration) -> dict[str, Any]:
    """TTS settings for the requested bins, and the values they are expected to give."""
    voice = spec.voice
    target_rate = RATE_TARGETS[spec.rate_bin]
    target_f0 = PITCH_TARGETS[voice.gender][spec.pitch_bin]
    if voice.engine == "flite":
        stretch = float(np.clip(calib.syllables_per_s / target_rate, 0.4, 2.5))
        expected_rate = calib.syllables_per_s / stretch
        if voice.pitch_control:
            pitch_setting: float | None = target_f0
            expected_f0 = target_f0
        else:
            pitch_setting, expected_f0 = None, calib.f0_hz
        return {"rate": stretch, "pitch": pitch_setting, "expected_rate": expected_rate,
                "expected_f0": expected_f0,
                "settings": {"duration_stretch": round(stretch, 4),
                             "int_f0_target_mean": pitch_setting}}
    speed = int(np.clip(round(ESPEAK_DEFAULT_SPEED * target_rate / calib.syllables_per_s), 80, 450))
    expected_rate = calib.syllables_per_s * speed / ESPEAK_DEFAULT_SPEED
    steps = ESPEAK_PITCH_STEPS_PER_OCTAVE * math.log2(target_f0 / calib.f0_hz)
    pitch_value = int(np.clip(round(ESPEAK_DEFAULT_PITCH + steps), 0, 99))
    expected_f0 = calib.f0_hz * 2 ** ((pitch_value - ESPEAK_DEFAULT_PITCH) / ESPEAK_PITCH_STEPS_PER_OCTAVE)
    return {"rate": speed, "pitch": pitch_value, "expected_rate": expected_rate,
            "expected_f0": expected_f0, "settings": {"speed_wpm": speed, "pitch": pitch_value}}


def _robotic_speech(spec: UtteranceSpec) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    """flite/espeak-ng: (16 kHz wave, labels so far, synth record so far)."""
    voice = spec.voice
    assert voice is not None
    with tempfile.TemporaryDirectory(prefix="speechllm-tts-") as tmp:
        calib = calibrate(voice, spec.text, Path(tmp))
        plan = _settings_for(spec, calib)
        wave, _ = _run_tts(voice, spec.text, Path(tmp) / "tts.wav", rate=plan["rate"], pitch=plan["pitch"])
    labels = {
        "gender": voice.gender,
        "accent": voice.accent,
        "speaking_rate": bin_value(plan["expected_rate"], SpeakingRateBins().slow_below,
                                   SpeakingRateBins().fast_above, RATE_NAMES),
    }
    record = {
        "requested": {"speaking_rate": spec.rate_bin, "volume": spec.volume_bin,
                      **({"pitch": spec.pitch_bin} if voice.pitch_control else {})},
        "default_syllables_per_s": round(calib.syllables_per_s, 3),
        "default_f0_hz": round(calib.f0_hz, 1),
        **plan["settings"],
        "expected_syllables_per_s": round(plan["expected_rate"], 3),
        "expected_f0_hz": round(plan["expected_f0"], 1),
    }
    if voice.pitch_control:
        # A voice whose pitch the synth cannot set gets no pitch label (the pitch annotator
        # measures it); a label would only restate the voice's default.
        record["pitch_label"] = bin_value(plan["expected_f0"], *PitchBins().thresholds(voice.gender), PITCH_NAMES)
    return wave, labels, record


def _natural_speech(spec: UtteranceSpec, cache_dir: str | None) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    """Kokoro/Piper: (16 kHz wave, labels so far, synth record so far).

    Speed is set for the rate bin and F0 moved to the pitch bin's target (+-7%) with Praat's
    PSOLA (formants kept, or scaled for a gender-converted voice); the labels are the bins of the
    rate and F0 measured on the result.
    """
    from speechllm.data.tts import TtsCache, set_median_f0, synthesize_natural

    voice = spec.voice
    assert voice is not None
    rng = np.random.default_rng([spec.render_seed, 1])
    speed = float(np.clip(RATE_TARGETS[spec.rate_bin] / NATURAL_DEFAULT_RATE * math.exp(rng.uniform(-0.05, 0.05)),
                          *NATURAL_SPEED_RANGE))
    f0_target = PITCH_TARGETS[voice.gender][spec.pitch_bin] * math.exp(rng.uniform(-F0_JITTER, F0_JITTER))
    wave = synthesize_natural(voice, spec.text, speed=speed, cache=TtsCache(cache_dir), sample_rate=SAMPLE_RATE)
    wave = set_median_f0(wave, SAMPLE_RATE, f0_target, voice.engine_gender, seed=spec.render_seed,
                         formant_shift=voice.formant_shift)
    start, end = measures.energy_speech_span(wave, SAMPLE_RATE)
    rate = measures.count_syllables(spec.text) / max(end - start, 1e-3)
    f0, _ = measures.median_f0(wave, SAMPLE_RATE)
    labels = {
        "gender": voice.gender,
        "accent": voice.accent,
        "speaking_rate": bin_value(rate, SpeakingRateBins().slow_below, SpeakingRateBins().fast_above, RATE_NAMES),
    }
    record: dict[str, Any] = {
        "requested": {"speaking_rate": spec.rate_bin, "volume": spec.volume_bin, "pitch": spec.pitch_bin},
        "speed": round(speed, 4),
        "warp": voice.warp,
        "phonemes": voice.language,
        **({"converted_from": voice.source_gender, "formant_shift": round(voice.formant_shift, 4)}
           if voice.source_gender else {}),
        "f0_target_hz": round(f0_target, 1),
        "measured_syllables_per_s": round(rate, 3),
    }
    if f0 is not None:
        record["measured_f0_hz"] = round(float(f0), 1)
        record["pitch_label"] = bin_value(float(f0), *PitchBins().thresholds(voice.gender), PITCH_NAMES)
    return wave, labels, record


def render_utterance(spec: UtteranceSpec, wav_dir: str | os.PathLike, cache_dir: str | None = None) -> Utterance:
    """Synthesise one row into ``wav_dir/<id>.wav`` (16 kHz int16) and return it.

    Speech: the voice, then the room (if any), then the gain for the volume bin, then the
    background noise at the drawn SNR (if any). Every label describes the bytes written.
    ``cache_dir`` caches the natural engines' output (None: no cache).
    """
    if spec.kind == "nonspeech":
        return _render_nonspeech(spec, wav_dir)
    voice = spec.voice
    assert voice is not None
    if voice.natural:
        wave, labels, record = _natural_speech(spec, cache_dir)
    else:
        wave, labels, record = _robotic_speech(spec)
    pitch_label = record.pop("pitch_label", None)
    conditions: dict[str, Any] = {}
    condition_record: dict[str, Any] = {}
    if spec.reverb:
        room = random_room(np.random.default_rng([spec.render_seed, 2]))
        wave = reverberate(wave, room.rir)
        c50 = room.c50
        conditions.update({"reverberation": reverberation_bin(c50), "c50_db": round(c50, 1)})
        condition_record["room"] = {"dims_m": list(room.dims), "rt60_s": room.rt60,
                                    "distance_m": round(room.distance, 2)}
    snr_db = None
    if spec.noise:
        low, high = SNR_RANGES[spec.snr_bin]
        snr_db = float(np.random.default_rng([spec.render_seed, 3]).uniform(low, high))
    pcm, gain_db, final_level = _level_and_write(wave, spec, snr_db, Path(wav_dir) / f"{spec.id}.wav")
    if spec.noise:
        assert snr_db is not None
        bins = SnrBins()
        conditions.update({"snr": bin_value(snr_db, bins.low_below, bins.high_above, SNR_NAMES),
                           "snr_db": round(snr_db, 1), "noise": NOISE_TYPES[spec.noise]})

    labels["volume"] = bin_value(final_level, VolumeBins().quiet_below, VolumeBins().loud_above, VOLUME_NAMES)
    labels["tts_engine"] = voice.engine
    labels["tts_voice"] = voice.name if not voice.natural else voice.id
    if pitch_label is not None:
        labels["pitch"] = pitch_label
    labels.update(conditions)
    if spec.label_speech:
        labels["contains_speech"] = True
    record.update({"gain_db": round(gain_db, 2), "level_dbfs": round(final_level, 2), "heldout_voice": voice.heldout})
    if voice.natural:
        record["natural"] = True
    record.update(condition_record)
    return Utterance(
        id=spec.id,
        audio=str(Path(wav_dir) / f"{spec.id}.wav"),
        duration=round(pcm.size / SAMPLE_RATE, 4),
        speaker=voice.id,
        transcript=spec.text,
        corpus="synth",
        split=spec.split,
        attributes=labels,
        provenance={name: PROVENANCE_CORPUS for name in [*labels, "transcript"]},
        extra={"synth": record},
    )


def _level_and_write(wave: np.ndarray, spec: UtteranceSpec, snr_db: float | None,
                     wav_path: Path) -> tuple[np.ndarray, float, float]:
    """Scale to the volume bin's level (no sample clipping), add the noise, write int16.

    Returns (pcm, gain in dB, the active level in dBFS of what was written).
    """
    from speechllm.audio.io import write_audio

    level = measures.active_level_dbfs(wave, SAMPLE_RATE)
    gain_db = VOLUME_TARGETS[spec.volume_bin] - level
    peak = float(np.abs(wave).max())
    if peak * 10 ** (gain_db / 20) > PEAK_LIMIT:
        gain_db = 20 * math.log10(PEAK_LIMIT / peak)
    scaled = wave * 10 ** (gain_db / 20)
    if snr_db is not None:
        noise = make_noise(spec.noise, np.random.default_rng([spec.render_seed, 4]), scaled.size)
        scaled = mix_at_snr(scaled, noise, snr_db, SAMPLE_RATE)
        mixed_peak = float(np.abs(scaled).max())
        if mixed_peak > PEAK_LIMIT:  # the SNR is kept: speech and noise are scaled together
            gain_db += 20 * math.log10(PEAK_LIMIT / mixed_peak)
            scaled = scaled * (PEAK_LIMIT / mixed_peak)
    # Round to the int16 grid before measuring, so the label describes the bytes on disk.
    pcm = np.round(np.clip(scaled, -1.0, 1.0) * 32767).astype(np.int16)
    write_audio(wav_path, pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    final_level = measures.active_level_dbfs(pcm.astype(np.float32) / 32767, SAMPLE_RATE)
    return pcm, gain_db, final_level


def _render_nonspeech(spec: UtteranceSpec, wav_dir: str | os.PathLike) -> Utterance:
    """A non-speech clip: labelled ``contains_speech: false`` and ``sound`` (what it is), no speaker."""
    rng = np.random.default_rng([spec.render_seed, 5])
    wave, words = make_sound(spec.sound, rng, float(rng.uniform(*NONSPEECH_SECONDS)), SAMPLE_RATE)
    pcm, gain_db, final_level = _level_and_write(wave, spec, None, Path(wav_dir) / f"{spec.id}.wav")
    labels = {
        "contains_speech": False,
        "sound": words,
        "volume": bin_value(final_level, VolumeBins().quiet_below, VolumeBins().loud_above, VOLUME_NAMES),
    }
    return Utterance(
        id=spec.id,
        audio=str(Path(wav_dir) / f"{spec.id}.wav"),
        duration=round(pcm.size / SAMPLE_RATE, 4),
        speaker=None,
        transcript=None,
        corpus="synth",
        split=spec.split,
        attributes=labels,
        provenance={name: PROVENANCE_CORPUS for name in labels},
        extra={"synth": {"sound_kind": spec.sound, "heldout_sound": spec.sound in HELDOUT_SOUND_KINDS,
                         "requested": {"volume": spec.volume_bin}, "gain_db": round(gain_db, 2),
                         "level_dbfs": round(final_level, 2)}},
    )


def _render_worker(args: tuple[UtteranceSpec, str, str | None]) -> Utterance:
    spec, wav_dir, cache_dir = args
    return render_utterance(spec, wav_dir, cache_dir)


def build_synthetic_corpus(
    out_dir: str | os.PathLike,
    *,
    num: int,
    seed: int = 0,
    sentences_path: str | os.PathLike | None = None,
    jobs: int = 2,
    overwrite: bool = False,
    progress: bool = True,
    mix: CorpusMix | None = None,
    cache_dir: str | os.PathLike | None = None,
    splits: tuple[str, ...] = SPLITS,
) -> dict[str, int]:
    """Build the corpus into ``out_dir``: ``wav/``, ``{train,dev,test,all}.jsonl``.

    ``mix`` adds natural voices, non-speech and acoustic conditions (None: the flite/espeak-ng
    corpus); ``cache_dir`` caches the natural voices' synthesis (default
    :func:`speechllm.data.tts.default_cache_dir`). ``splits`` renders only those splits: their
    rows are exactly the rows of the full corpus (each row's draws depend on seed, split and index
    only), so ``--num 4000 --splits test`` gives a larger test set whose first rows are those of
    ``--num 1000``. The folder appears complete or not at all. Returns the row count per split.
    """
    if num < 1:
        raise SynthError(f"--num must be >= 1, got {num}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SynthError(f"{out} already exists and is not empty; pass --overwrite to replace it")
    check_tts_installed()
    mix = mix or CorpusMix(natural=0.0, nonspeech=0.0, noisy=0.0, reverb=0.0)
    if mix.natural > 0:
        from speechllm.data.tts import check_natural_installed

        check_natural_installed(mix.engines)
    if mix.reverb > 0:
        try:
            import pyroomacoustics  # noqa: F401
        except ImportError:
            raise SynthError("--reverb needs pyroomacoustics; install it with: pip install pyroomacoustics "
                             "(or bash scripts/install.sh)") from None
    if cache_dir is None and mix.natural > 0:
        from speechllm.data.tts import default_cache_dir

        cache_dir = default_cache_dir()
    sentences = read_sentences(sentences_path)
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise SynthError(f"--splits {','.join(splits)}: choose among {', '.join(SPLITS)}")
    specs = [s for s in plan_mixed_corpus(sentences, num, seed, mix) if s.split in splits]

    from speechllm.utils.fs import atomic_directory

    with atomic_directory(out, overwrite=True) as tmp:
        wav_dir = tmp / "wav"
        wav_dir.mkdir()
        rows = _render_all(specs, wav_dir, jobs=jobs, progress=progress,
                           cache_dir=str(cache_dir) if cache_dir is not None else None)
        counts: dict[str, int] = {}
        for split in splits:
            split_rows = [u for u in rows if u.split == split]
            counts[split] = write_manifest(tmp / f"{split}.jsonl", split_rows)
        write_manifest(tmp / "all.jsonl", rows)
    return counts


def _render_all(specs: list[UtteranceSpec], wav_dir: Path, *, jobs: int,
                progress: bool, cache_dir: str | None = None) -> list[Utterance]:
    from speechllm.utils.progress import progress_bar

    work = [(s, str(wav_dir), cache_dir) for s in specs]
    bar = progress_bar(len(work), "synth", "utt", enabled=progress)
    results: list[Utterance] = []
    try:
        if jobs <= 1:
            for item in work:
                results.append(_render_worker(item))
                bar.update()
        else:
            import multiprocessing as mp

            ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
            with ctx.Pool(jobs) as pool:
                # Ordered imap: the manifest order never depends on which worker finished first.
                for result in pool.imap(_render_worker, work, chunksize=4):
                    results.append(result)
                    bar.update()
    finally:
        bar.close()
    return results
