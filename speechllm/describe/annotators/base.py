"""The annotator interface, the per-row audio clip they share, and the registry by name.

An annotator measures or predicts attributes of one utterance from its audio. It is built once
per process (``load`` loads any model then), and called once per row with the row's
:class:`Utterance` and an :class:`AudioClip` holding audio decoded once for every annotator.
Values are written through :meth:`Annotator.set`, which records provenance
``annotator:<name>`` and never replaces a corpus or user label unless the config says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

from speechllm.audio import measures
from speechllm.config.describe import DescribeConfig
from speechllm.data.manifest import Utterance
from speechllm.errors import SpeechLLMError


class UnknownAnnotatorError(SpeechLLMError):
    """An annotator name that is not registered."""


@dataclass
class AudioClip:
    """Audio of one row (mono float32), decoded once, with measures cached for every annotator.

    ``speech_segments`` is filled by the VAD annotator (seconds); later annotators use it when set.
    """

    wave: np.ndarray
    sample_rate: int
    speech_segments: list[tuple[float, float]] | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def seconds(self) -> float:
        return self.wave.size / self.sample_rate

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """Compute a shared measure once per row (e.g. the pitch track used by two annotators)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def speech_span(self) -> tuple[float, float]:
        """First speech onset to last offset: from the VAD when it ran, else from energy."""
        if self.speech_segments:
            return self.speech_segments[0][0], self.speech_segments[-1][1]
        return self.cached("energy_span", lambda: measures.energy_speech_span(self.wave, self.sample_rate))

    def speech_audio(self, max_seconds: float | None = None) -> np.ndarray:
        """The speech segments joined (the whole clip when there is no VAD), cut to ``max_seconds``."""
        if self.speech_segments:
            parts = [self.wave[int(s * self.sample_rate):int(e * self.sample_rate)]
                     for s, e in self.speech_segments]
            wave = np.concatenate(parts) if parts else self.wave
        else:
            wave = self.wave
        if max_seconds is not None:
            wave = wave[: int(max_seconds * self.sample_rate)]
        return wave


class Annotator:
    """Base class. Subclasses set ``name`` and implement :meth:`annotate`; model-backed ones
    implement :meth:`load`. ``requires_speech`` annotators are skipped on non-speech rows."""

    name: ClassVar[str] = ""
    requires_speech: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def __init__(self, config: DescribeConfig):
        self.config = config

    @property
    def provenance(self) -> str:
        return f"annotator:{self.name}"

    def load(self) -> None:
        """Load models; called once per process before the first row."""

    def annotate(self, utt: Utterance, clip: AudioClip) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def set(self, utt: Utterance, attribute: str, value: Any, *, confidence: float | None = None) -> bool:
        """Write ``attributes[attribute]`` (kept when it is a corpus/user label unless
        ``overwrite_labels``). A ``confidence`` marks the value as a prediction: it is stored in
        ``row["confidence"][attribute]``. Returns whether the value was written."""
        written = utt.set_attribute(attribute, value, self.provenance,
                                    overwrite=self.config.overwrite_labels)
        if written and confidence is not None:
            utt.extra.setdefault("confidence", {})[attribute] = round(float(confidence), 4)
        return written


_REGISTRY: dict[str, type[Annotator]] = {}
A = TypeVar("A", bound=type[Annotator])


def register_annotator(cls: A) -> A:
    """Class decorator: make an annotator available by its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"annotator {cls.name!r} is already registered by {_REGISTRY[cls.name].__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def available_annotators() -> dict[str, type[Annotator]]:
    """Registered annotators by name (the built-in ones are imported first)."""
    import speechllm.describe.annotators  # noqa: F401 - registers the built-ins

    return dict(_REGISTRY)


def build_annotators(names: list[str], config: DescribeConfig) -> list[Annotator]:
    """Instantiate annotators by name, in the given order (unknown names raise listing the known)."""
    known = available_annotators()
    out = []
    for name in names:
        if name not in known:
            raise UnknownAnnotatorError(
                f"unknown annotator {name!r}; known annotators: {', '.join(sorted(known))}"
            )
        out.append(known[name](config))
    return out
