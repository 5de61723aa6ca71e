"""``speaking_rate``: words/s and syllables/s of the transcript over the speech span, binned
slow/normal/fast by syllables/s (run ``vad`` and ``asr`` first for untranscribed audio).

The span is the audio the transcript covers: the whole speech span (first onset to last offset,
pauses included) for a given transcript, and the ``transcript_coverage`` the ``asr`` annotator
records for its own (it leaves out windows whose text it dropped, and audio past
``asr_max_seconds``), so a partial transcript is never divided by the whole clip.
"""

from __future__ import annotations

from speechllm.audio import measures
from speechllm.config.describe import RATE_NAMES, bin_value
from speechllm.data.manifest import Utterance
from speechllm.describe.annotators.base import Annotator, AudioClip, register_annotator

MIN_SPAN_SECONDS = 0.2


@register_annotator
class SpeakingRateAnnotator(Annotator):
    name = "speaking_rate"
    requires_speech = True
    description = "syllables/s and words/s of the transcript over the speech span, binned slow/normal/fast"

    def annotate(self, utt: Utterance, clip: AudioClip) -> None:
        text = (utt.transcript or "").strip()
        if not text:
            return
        coverage = utt.extra.get("transcript_coverage")
        if coverage:
            span = sum(float(end) - float(start) for start, end in coverage)
        else:
            start, end = clip.speech_span()
            span = end - start
        if span < MIN_SPAN_SECONDS:
            return
        syllables = measures.count_syllables(text) / span
        words = measures.count_words(text) / span
        bins = self.config.speaking_rate
        self.set(utt, "syllables_per_s", round(syllables, 2))
        self.set(utt, "words_per_s", round(words, 2))
        self.set(utt, "speaking_rate", bin_value(syllables, bins.slow_below, bins.fast_above, RATE_NAMES))
