"""Thresholds and options of the ``describe`` stage, with the reasoning behind each number.

Bins are closed on the "normal" side: a value equal to a threshold is ``normal``. Change them
through a YAML file (``speechllm describe --config``) or ``key=value`` overrides, e.g.
``pitch.male_high_above=160``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from speechllm.config.fields import _f  # the one helper for fields with help text

DEFAULT_ANNOTATORS = ["duration", "vad", "volume", "snr", "gender", "pitch", "asr", "speaking_rate"]


@dataclass
class SpeakingRateBins:
    """Syllables per second over the speech span (first to last speech frame, pauses included).

    Read English runs at about 4-5 syllables/s (conversational up to ~6); below 3.5 sounds
    deliberately slow, above 5.5 hurried.
    """

    slow_below: float = _f(3.5, "syllables/s below this are 'slow'", gt=0)
    fast_above: float = _f(5.5, "syllables/s above this are 'fast'", ge="slow_below")


@dataclass
class PitchBins:
    """Median F0 in Hz, binned relative to the speaker's gender.

    Typical adult F0: male ~85-180 Hz (centre ~120), female ~165-255 Hz (centre ~210). 'low' and
    'high' cut off roughly the outer fifth of each range. Speakers of unknown gender use a wide
    middle band that only flags clearly low or high voices.
    """

    male_low_below: float = _f(100.0, "male median F0 (Hz) below this is 'low'", gt=0)
    male_high_above: float = _f(145.0, "male median F0 (Hz) above this is 'high'", ge="male_low_below")
    female_low_below: float = _f(175.0, "female median F0 (Hz) below this is 'low'", gt=0)
    female_high_above: float = _f(240.0, "female median F0 (Hz) above this is 'high'", ge="female_low_below")
    unknown_low_below: float = _f(100.0, "median F0 (Hz) below this is 'low' when gender is unknown", gt=0)
    unknown_high_above: float = _f(240.0, "median F0 (Hz) above this is 'high' when gender is unknown", ge="unknown_low_below")
    floor_hz: float = _f(60.0, "lowest F0 searched (Hz)", gt=0, lt="ceiling_hz")
    ceiling_hz: float = _f(500.0, "highest F0 searched (Hz)", le=8000)

    def thresholds(self, gender: str | None) -> tuple[float, float]:
        """(low_below, high_above) for a gender label ('male', 'female', anything else)."""
        g = (gender or "").lower()
        if g == "male":
            return self.male_low_below, self.male_high_above
        if g == "female":
            return self.female_low_below, self.female_high_above
        return self.unknown_low_below, self.unknown_high_above


@dataclass
class VolumeBins:
    """Active-speech RMS level in dBFS (silence excluded).

    Broadcast and telephony normalise active speech to about -23 to -26 dBFS; recordings 10 dB
    quieter than that sound distant or faint, recordings near -15 dBFS sound loud.
    """

    quiet_below: float = _f(-35.0, "active RMS level (dBFS) below this is 'quiet'", le=0)
    loud_above: float = _f(-20.0, "active RMS level (dBFS) above this is 'loud'", ge="quiet_below", le=0)


@dataclass
class SnrBins:
    """Estimated signal-to-noise ratio in dB.

    Below ~10 dB noise is obvious and hurts ASR; above ~25 dB a recording sounds clean.
    """

    low_below: float = _f(10.0, "SNR (dB) below this is 'low' (noisy)")
    high_above: float = _f(25.0, "SNR (dB) above this is 'high' (clean)", ge="low_below")


@dataclass
class VadConfig:
    """silero-vad settings (its defaults) and the speech/non-speech decision."""

    threshold: float = _f(0.5, "speech probability threshold", ge=0, le=1)
    min_speech_ms: int = _f(250, "shortest speech segment kept (ms)", ge=0)
    min_silence_ms: int = _f(100, "shortest silence that splits segments (ms)", ge=0)
    speech_pad_ms: int = _f(30, "padding added around each segment (ms)", ge=0)
    min_speech_seconds: float = _f(0.3, "a clip with less detected speech than this is non-speech", ge=0)


@dataclass
class DescribeConfig:
    """Everything ``speechllm describe`` can be told."""

    annotators: list[str] = _f(list(DEFAULT_ANNOTATORS), "annotators to run, in order")
    overwrite_labels: bool = _f(False, "let annotators replace corpus/user labels")
    speaking_rate: SpeakingRateBins = field(default_factory=SpeakingRateBins, metadata={"help": "speaking-rate bins"})
    pitch: PitchBins = field(default_factory=PitchBins, metadata={"help": "pitch bins"})
    volume: VolumeBins = field(default_factory=VolumeBins, metadata={"help": "volume bins"})
    snr: SnrBins = field(default_factory=SnrBins, metadata={"help": "SNR bins"})
    vad: VadConfig = field(default_factory=VadConfig, metadata={"help": "voice activity detection"})
    asr_model: str = _f("offline:whisper-tiny.en", "Whisper model for missing transcripts (offline:NAME, folder or hub id)")
    asr_max_seconds: float | None = _f(
        None, "transcribe only the first this many seconds (null: all of it, every 30 s window with speech); "
        "the speaking rate and the description's time span then cover only that part", gt=0)
    asr_max_new_tokens: int = _f(160, "most tokens of a generated transcript (30 s of fast speech is ~120)", ge=1)
    asr_language: str | None = _f(
        None, "transcript language for a multilingual Whisper (e.g. en); null: detected per clip (English-only "
        "models ignore it)")
    gender_max_seconds: float = _f(20.0, "seconds of audio given to the gender classifier", gt=0)
    classifiers: dict[str, str] = _f({}, "attribute -> HF audio-classification model, for the hf-classifier annotator")
    template: str = _f("desta2-v1", "seed-description template id")
    description_attributes: list[str] = _f([], "attributes in the description, in order (empty: the template's default)")


def bin_value(value: float, low_below: float, high_above: float,
              names: tuple[str, str, str]) -> str:
    """Map ``value`` to one of three bin names: ``names[0]`` below ``low_below``, ``names[2]``
    above ``high_above``, else ``names[1]``."""
    if value < low_below:
        return names[0]
    if value > high_above:
        return names[2]
    return names[1]


RATE_NAMES = ("slow", "normal", "fast")
PITCH_NAMES = ("low", "normal", "high")
VOLUME_NAMES = ("quiet", "normal", "loud")
SNR_NAMES = ("low", "medium", "high")
