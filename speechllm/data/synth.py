"""The offline synthetic corpus: Harvard sentences spoken by flite and espeak-ng voices.

Every utterance gets a voice, a speaking-rate bin, a pitch bin and a volume bin, drawn from a
random generator seeded by ``(seed, split, index)``; the same ``num``/``seed`` therefore gives the
same manifest and the same audio bytes (both TTS engines are deterministic), whatever the number of
worker processes.

Labels are written with provenance ``corpus`` and come from the settings actually used: each voice
says each sentence once at its defaults (F0 and syllable rate measured with
:mod:`speechllm.describe.measures`),
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
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speechllm.data.manifest import PROVENANCE_CORPUS, Utterance, write_manifest
from speechllm.describe import measures
from speechllm.describe.config import (
    PITCH_NAMES,
    RATE_NAMES,
    VOLUME_NAMES,
    PitchBins,
    SpeakingRateBins,
    VolumeBins,
    bin_value,
)
from speechllm.errors import SpeechLLMError

log = logging.getLogger(__name__)

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

ESPEAK_DEFAULT_SPEED = 175  # words per minute
ESPEAK_DEFAULT_PITCH = 50  # 0-99
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
APT_PACKAGES = {"flite": "flite", "espeak-ng": "espeak-ng"}


class SynthError(SpeechLLMError):
    """The synthetic corpus cannot be built (missing TTS binary, sentence file, bad arguments)."""


@dataclass(frozen=True)
class Voice:
    """A TTS voice: ``id`` is the speaker id written to the manifest."""

    id: str
    engine: str  # "flite" | "espeak-ng"
    name: str  # flite -voice NAME / espeak-ng -v NAME
    gender: str
    accent: str
    heldout: bool
    pitch_control: bool = True


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


def check_tts_installed(engines: tuple[str, ...] = ("flite", "espeak-ng")) -> None:
    """Raise :class:`SynthError` naming the apt package for each missing TTS binary."""
    missing = [e for e in engines if shutil.which(e) is None]
    if missing:
        pkgs = " ".join(APT_PACKAGES[e] for e in missing)
        raise SynthError(
            f"TTS binary not found: {', '.join(missing)}; install it with: apt-get install {pkgs}"
        )


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
    """What to synthesise for one row (chosen in the parent; rendered in a worker)."""

    id: str
    split: str
    text: str
    voice: Voice
    rate_bin: str
    pitch_bin: str
    volume_bin: str


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


def _run_tts(voice: Voice, text: str, out_wav: Path, *, rate: float | None = None,
             pitch: float | None = None) -> tuple[np.ndarray, list[str]]:
    """Synthesise ``text``; returns (mono float32 at 16 kHz, the command's settings args)."""
    from speechllm.audio import resample

    if voice.engine == "flite":
        settings: list[str] = []
        if rate is not None:
            settings += ["--setf", f"duration_stretch={rate:.4f}"]
        if pitch is not None:
            settings += ["--setf", f"int_f0_target_mean={pitch:.1f}"]
        cmd = ["flite", "-voice", voice.name, *settings, "-t", text, "-o", str(out_wav)]
    else:
        speed = ESPEAK_DEFAULT_SPEED if rate is None else int(rate)
        pitch_value = ESPEAK_DEFAULT_PITCH if pitch is None else int(pitch)
        settings = ["-s", str(speed), "-p", str(pitch_value)]
        cmd = ["espeak-ng", "-v", voice.name, *settings, "-w", str(out_wav), text]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SynthError(
            f"{voice.engine} not found; install it with: apt-get install {APT_PACKAGES[voice.engine]}"
        ) from None
    if proc.returncode != 0 or not out_wav.is_file():
        raise SynthError(f"{' '.join(cmd[:4])} ... failed: {proc.stderr.strip()[:300]}")
    import soundfile as sf

    data, sr = sf.read(str(out_wav), dtype="float32", always_2d=True)
    return resample(data.mean(axis=1), sr, SAMPLE_RATE), settings


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


def render_utterance(spec: UtteranceSpec, wav_dir: str | os.PathLike) -> Utterance:
    """Synthesise one utterance into ``wav_dir/<id>.wav`` (16 kHz int16) and return its row."""
    import soundfile as sf

    wav_path = Path(wav_dir) / f"{spec.id}.wav"
    with tempfile.TemporaryDirectory(prefix="speechllm-tts-") as tmp:
        calib = calibrate(spec.voice, spec.text, Path(tmp))
        plan = _settings_for(spec, calib)
        wave, _ = _run_tts(spec.voice, spec.text, Path(tmp) / "tts.wav",
                           rate=plan["rate"], pitch=plan["pitch"])
    level = measures.active_level_dbfs(wave, SAMPLE_RATE)
    gain_db = VOLUME_TARGETS[spec.volume_bin] - level
    peak = float(np.abs(wave).max())
    if peak * 10 ** (gain_db / 20) > PEAK_LIMIT:
        gain_db = 20 * math.log10(PEAK_LIMIT / peak)
    # Round to the int16 grid before measuring, so the label describes the bytes on disk.
    pcm = np.round(np.clip(wave * 10 ** (gain_db / 20), -1.0, 1.0) * 32767).astype(np.int16)
    sf.write(str(wav_path), pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    final_level = measures.active_level_dbfs(pcm.astype(np.float32) / 32767, SAMPLE_RATE)

    voice = spec.voice
    labels = {
        "gender": voice.gender,
        "accent": voice.accent,
        "speaking_rate": bin_value(plan["expected_rate"], SpeakingRateBins().slow_below,
                                   SpeakingRateBins().fast_above, RATE_NAMES),
        "volume": bin_value(final_level, VolumeBins().quiet_below, VolumeBins().loud_above, VOLUME_NAMES),
        "tts_engine": voice.engine,
        "tts_voice": voice.name,
    }
    if voice.pitch_control:
        # A voice whose pitch the synth cannot set gets no pitch label (the pitch annotator
        # measures it); a label would only restate the voice's default.
        labels["pitch"] = bin_value(plan["expected_f0"], *PitchBins().thresholds(voice.gender), PITCH_NAMES)
    utt = Utterance(
        id=spec.id,
        audio=str(wav_path),
        duration=round(pcm.size / SAMPLE_RATE, 4),
        speaker=voice.id,
        transcript=spec.text,
        corpus="synth",
        split=spec.split,
        attributes=labels,
        provenance={name: PROVENANCE_CORPUS for name in [*labels, "transcript"]},
        extra={
            "synth": {
                "requested": {"speaking_rate": spec.rate_bin, "volume": spec.volume_bin,
                              **({"pitch": spec.pitch_bin} if voice.pitch_control else {})},
                "default_syllables_per_s": round(calib.syllables_per_s, 3),
                "default_f0_hz": round(calib.f0_hz, 1),
                **plan["settings"],
                "expected_syllables_per_s": round(plan["expected_rate"], 3),
                "expected_f0_hz": round(plan["expected_f0"], 1),
                "gain_db": round(gain_db, 2),
                "level_dbfs": round(final_level, 2),
                "heldout_voice": voice.heldout,
            }
        },
    )
    return utt


def _render_worker(args: tuple[UtteranceSpec, str]) -> Utterance:
    spec, wav_dir = args
    return render_utterance(spec, wav_dir)


def build_synthetic_corpus(
    out_dir: str | os.PathLike,
    *,
    num: int,
    seed: int = 0,
    sentences_path: str | os.PathLike | None = None,
    jobs: int = 2,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Build the corpus into ``out_dir``: ``wav/``, ``{train,dev,test,all}.jsonl``.

    The folder appears complete or not at all. Returns the row count per split.
    """
    if num < 1:
        raise SynthError(f"--num must be >= 1, got {num}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SynthError(f"{out} already exists and is not empty; pass --overwrite to replace it")
    check_tts_installed()
    sentences = read_sentences(sentences_path)
    specs = plan_corpus(sentences, num, seed)

    from speechllm.utils.fs import atomic_directory

    with atomic_directory(out, overwrite=True) as tmp:
        wav_dir = tmp / "wav"
        wav_dir.mkdir()
        rows = _render_all(specs, wav_dir, jobs=jobs, progress=progress)
        counts: dict[str, int] = {}
        for split in SPLITS:
            split_rows = [u for u in rows if u.split == split]
            counts[split] = write_manifest(tmp / f"{split}.jsonl", split_rows)
        write_manifest(tmp / "all.jsonl", rows)
    return counts


def _render_all(specs: list[UtteranceSpec], wav_dir: Path, *, jobs: int,
                progress: bool) -> list[Utterance]:
    from speechllm.utils.progress import progress_bar

    work = [(s, str(wav_dir)) for s in specs]
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
