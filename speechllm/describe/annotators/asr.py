"""``asr``: a Whisper transcript (HF transformers) for speech rows that have none.

The model is ``config.asr_model``: ``offline:whisper-tiny.en`` (the default, built from a registry
package), a local folder or a hub id. The transcript goes into the row's ``transcript`` field with
provenance ``annotator:asr`` and ``confidence.transcript`` = the geometric-mean probability of its
tokens. Non-speech rows (VAD) are skipped, as DeSTA2 does: no speech, no transcript.

Audio longer than Whisper's 30 s is cut into the model's own 30 s windows
(:func:`speechllm.models.encoder.cut_windows`, what the speech model hears) and every window with
speech is transcribed; windows without speech (the VAD annotator's segments, else silero's
:func:`~speechllm.models.transcript.has_speech` on the window) are not, since Whisper invents text
for silence. A window whose text is degenerate (no letters, e.g. ``". . . . "``; a loop; nothing)
is left out and recorded in ``transcript_dropped``. The stretches of audio the transcript covers
are recorded in ``transcript_coverage`` (``[[start, end], ...]`` in seconds): the speaking rate
divides by them and the description's time span shows them, so neither claims more audio than the
transcript heard.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from speechllm.data.manifest import Utterance
from speechllm.describe.annotators.base import Annotator, AudioClip, register_annotator

log = logging.getLogger(__name__)

#: Windows decoded in one ``generate`` call (a 10-minute clip is 20 windows).
ASR_BATCH_WINDOWS = 8


@dataclass
class AsrWindow:
    """One 30 s window of a clip: where it lies, its samples and the speech in it (seconds)."""

    start: float
    end: float
    wave: np.ndarray
    speech: tuple[float, float] | None  # first speech onset to last offset inside the window


@dataclass
class WindowTranscript:
    """Whisper's text of one window, the sum of its tokens' log-probabilities and their count."""

    text: str
    logprob_sum: float
    tokens: int


def transcript_degeneracy(text: str) -> str | None:
    """Why a window's transcript is not speech, or None: ``"empty"``, ``"no_letters"`` (Whisper's
    ``". . . . "`` for noise or silence) or ``"loop"`` (a repeated phrase; the generation stage's
    own check)."""
    from speechllm.generate.quality import degeneracy

    if not text.strip():
        return "empty"
    if not any(ch.isalpha() for ch in text):
        return "no_letters"
    return degeneracy(text)


def plan_windows(clip: AudioClip, max_seconds: float | None, min_speech_seconds: float) -> list[AsrWindow]:
    """The clip's 30 s windows (the first ``max_seconds`` only, when set) with the speech in each.

    Speech comes from the VAD annotator's segments when it ran (a window needs at least
    ``min_speech_seconds`` of them), else from silero on the window itself, the speech model's
    check; a window's speech extent is then the clip's speech span clipped to the window.
    """
    from speechllm.models.encoder import cut_windows

    if clip.sample_rate != 16_000:
        raise ValueError(f"the asr annotator needs 16 kHz audio, got {clip.sample_rate} Hz")
    wave = clip.wave if max_seconds is None else clip.wave[: int(max_seconds * clip.sample_rate)]
    windows, _, _ = cut_windows([wave])
    out: list[AsrWindow] = []
    offset = 0.0
    for window in windows:
        start, end = offset, offset + window.size / clip.sample_rate
        offset = end
        speech: tuple[float, float] | None = None
        if clip.speech_segments is not None:
            inside = [(max(s, start), min(e, end)) for s, e in clip.speech_segments if e > start and s < end]
            if sum(e - s for s, e in inside) >= min_speech_seconds:
                speech = (inside[0][0], inside[-1][1])
        else:
            from speechllm.models.transcript import has_speech

            if window.size and has_speech(window, clip.sample_rate):
                s, e = clip.speech_span()
                s, e = max(s, start), min(e, end)
                speech = (s, e) if e > s else (start, end)
        out.append(AsrWindow(start=start, end=end, wave=window, speech=speech))
    return out


@register_annotator
class AsrAnnotator(Annotator):
    name = "asr"
    requires_speech = True
    description = "Whisper transcript where the row has none, every 30 s window with speech (skipped for non-speech)"

    def load(self) -> None:
        # Whisper is loaded on the first row that needs a transcript: a corpus that ships
        # transcripts never pays for (or needs) the model.
        self.model = None

    def _load_model(self) -> None:
        # The speech model's loader and decoding path (speechllm.models): one way to run Whisper.
        from speechllm.models.encoder import load_whisper

        self.model, self.feature_extractor, self.tokenizer, _ = load_whisper(self.config.asr_model)
        if self.tokenizer is None:
            from speechllm.models.transcript import TranscriptError

            raise TranscriptError(f"describe.asr_model {self.config.asr_model}: no Whisper tokenizer beside the "
                                  "weights; add tokenizer.json to the model folder")

    def transcribe_windows(self, waves: list[np.ndarray], sample_rate: int = 16_000) -> list[WindowTranscript]:
        """Greedy Whisper transcripts of audio windows of at most 30 s each, in batches."""
        out: list[WindowTranscript] = []
        for b in range(0, len(waves), ASR_BATCH_WINDOWS):
            out += self._transcribe_batch(waves[b:b + ASR_BATCH_WINDOWS], sample_rate)
        return out

    def _transcribe_batch(self, waves: list[np.ndarray], sample_rate: int) -> list[WindowTranscript]:
        import torch

        from speechllm.models.transcript import whisper_generate

        if getattr(self, "model", None) is None:
            self._load_model()
        features = self.feature_extractor(
            list(waves), sampling_rate=sample_rate, return_tensors="pt", padding="max_length"
        ).input_features
        # A multilingual Whisper left to detect the language can pick a wrong one on short or
        # noisy clips (asr_language fixes it); English-only models take no language.
        out = whisper_generate(self.model, self.tokenizer, input_features=features.to(self.model.dtype),
                               language=self.config.asr_language, max_new_tokens=self.config.asr_max_new_tokens,
                               scores=True)
        with torch.inference_mode():
            scores = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        eos = self.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        generated = out.sequences[:, -scores.shape[1]:]
        results = []
        for row in range(len(waves)):
            # A finished row is padded (with end-of-text) while the others decode: count its
            # tokens up to and including its first end-of-text only.
            ends = (generated[row] == eos).nonzero()
            n = int(ends[0]) + 1 if len(ends) else generated.shape[1]
            logprobs = scores[row, :n]
            logprobs = logprobs[torch.isfinite(logprobs)]
            text = self.tokenizer.decode(out.sequences[row], skip_special_tokens=True).strip()
            results.append(WindowTranscript(text, float(logprobs.sum()), int(logprobs.numel())))
        return results

    def annotate(self, utt: Utterance, clip: AudioClip) -> None:
        if utt.transcript and not self.config.overwrite_labels:
            return
        windows = [w for w in plan_windows(clip, self.config.asr_max_seconds, self.config.vad.min_speech_seconds)
                   if w.speech is not None]
        texts: list[str] = []
        coverage: list[list[float]] = []  # runs of consecutive kept windows: [start, end]
        dropped: list[dict[str, object]] = []
        logprob_sum, tokens = 0.0, 0
        extend = False  # whether the next kept window continues the current run
        for window, result in zip(windows, self.transcribe_windows([w.wave for w in windows], clip.sample_rate),
                                  strict=True):
            assert window.speech is not None
            reason = transcript_degeneracy(result.text)
            if reason is not None:
                log.debug("%s: window %.0f-%.0f s dropped (%s): %r", utt.id, window.start, window.end,
                          reason, result.text[:80])
                dropped.append({"start": round(window.start, 3), "end": round(window.end, 3), "reason": reason})
                extend = False
                continue
            texts.append(result.text)
            logprob_sum += result.logprob_sum
            tokens += result.tokens
            start, end = round(window.speech[0], 3), round(window.speech[1], 3)
            if extend:
                coverage[-1][1] = end
            else:
                coverage.append([start, end])
            extend = True
        # Written afresh each time ASR runs, so a row never keeps another pass's record.
        utt.extra.pop("transcript_dropped", None)
        utt.extra.pop("transcript_coverage", None)
        if dropped:
            utt.extra["transcript_dropped"] = dropped
        if not texts:  # no window with speech, or only degenerate ones: no transcript at all
            return
        utt.transcript = " ".join(texts)
        utt.provenance["transcript"] = self.provenance
        utt.extra.setdefault("confidence", {})["transcript"] = round(
            float(np.exp(logprob_sum / tokens)) if tokens else 0.0, 4)
        utt.extra["transcript_coverage"] = coverage
