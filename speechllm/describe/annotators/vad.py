"""``vad``: speech segments, speech ratio and the speech / non-speech decision (silero-vad).

silero-vad's own ``get_speech_timestamps`` runs the model one 32 ms window at a time from Python
(~90x real time on one core here). :class:`BatchedSileroVad` runs the same bundled weights with
every window's convolutional front end in one batch and the LSTM over the sequence in one call:
the same probabilities (to 1e-5) at ~700x real time. The probabilities then go through silero's
own ``get_speech_timestamps_from_probs``. When the installed silero-vad has a different layout,
silero's plain ``get_speech_timestamps`` is used instead.
"""

from __future__ import annotations

import logging

import numpy as np

from speechllm.data.manifest import Utterance
from speechllm.describe.annotators.base import Annotator, AudioClip, register_annotator

log = logging.getLogger(__name__)

WINDOW = 512  # samples at 16 kHz per probability
CONTEXT = 64  # samples of the previous window each window sees (silero v5+)
_KEY_MAP = {
    "stft.forward_basis_buffer": "stft",
    "encoder.0.reparam_conv.weight": "conv1.weight", "encoder.0.reparam_conv.bias": "conv1.bias",
    "encoder.1.reparam_conv.weight": "conv2.weight", "encoder.1.reparam_conv.bias": "conv2.bias",
    "encoder.2.reparam_conv.weight": "conv3.weight", "encoder.2.reparam_conv.bias": "conv3.bias",
    "encoder.3.reparam_conv.weight": "conv4.weight", "encoder.3.reparam_conv.bias": "conv4.bias",
    "decoder.rnn.weight_ih": "lstm.weight_ih", "decoder.rnn.weight_hh": "lstm.weight_hh",
    "decoder.rnn.bias_ih": "lstm.bias_ih", "decoder.rnn.bias_hh": "lstm.bias_hh",
    "decoder.decoder.2.weight": "out.weight", "decoder.decoder.2.bias": "out.bias",
}


class BatchedSileroVad:
    """silero-vad (16 kHz) speech probabilities for a whole clip in one batched pass."""

    def __init__(self) -> None:
        import torch

        from speechllm.models.transcript import silero_model

        self._jit = silero_model()  # loaded once per process, shared with the speech model's VAD
        state = self._jit._model.state_dict()
        self.batched = set(_KEY_MAP) <= set(state)
        if not self.batched:
            log.warning("silero-vad layout not recognised; using its slower per-window loop")
            return
        w = {new: state[old].float() for old, new in _KEY_MAP.items()}
        self.w = w
        self.lstm = torch.nn.LSTM(128, 128, batch_first=True)
        with torch.no_grad():
            self.lstm.weight_ih_l0.copy_(w["lstm.weight_ih"])
            self.lstm.weight_hh_l0.copy_(w["lstm.weight_hh"])
            self.lstm.bias_ih_l0.copy_(w["lstm.bias_ih"])
            self.lstm.bias_hh_l0.copy_(w["lstm.bias_hh"])
        self.lstm.eval()

    def probabilities(self, wave: np.ndarray) -> np.ndarray:
        """Speech probability of each 512-sample window (the last one zero-padded)."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        with torch.inference_mode():
            if not self.batched:
                return self._jit.audio_forward(x, 16000)[0].numpy()
            w = self.w
            n = -(-x.numel() // WINDOW)
            x = F.pad(x, (CONTEXT, n * WINDOW - x.numel()))
            windows = x.unfold(0, CONTEXT + WINDOW, WINDOW).unsqueeze(1)  # (n, 1, 576)
            h = F.pad(windows, (0, 64), mode="reflect")
            h = F.conv1d(h, w["stft"], stride=128)
            h = torch.sqrt(h[:, :129] ** 2 + h[:, 129:] ** 2)
            h = F.relu(F.conv1d(h, w["conv1.weight"], w["conv1.bias"], padding=1))
            h = F.relu(F.conv1d(h, w["conv2.weight"], w["conv2.bias"], stride=2, padding=1))
            h = F.relu(F.conv1d(h, w["conv3.weight"], w["conv3.bias"], stride=2, padding=1))
            h = F.relu(F.conv1d(h, w["conv4.weight"], w["conv4.bias"], padding=1)).squeeze(-1)
            h, _ = self.lstm(h.unsqueeze(0))
            logits = F.relu(h[0]) @ w["out.weight"][0, :, 0] + w["out.bias"]
            return torch.sigmoid(logits).numpy()

    def speech_segments(self, wave: np.ndarray, *, threshold: float = 0.5, min_speech_ms: int = 250,
                        min_silence_ms: int = 100, speech_pad_ms: int = 30) -> list[tuple[float, float]]:
        """Speech segments in seconds, with silero's own segmentation rules."""
        import silero_vad

        kwargs = dict(sampling_rate=16000, threshold=threshold, min_speech_duration_ms=min_speech_ms,
                      min_silence_duration_ms=min_silence_ms, speech_pad_ms=speech_pad_ms)
        from_probs = getattr(silero_vad, "get_speech_timestamps_from_probs", None)
        if self.batched and from_probs is not None:
            probs = self.probabilities(wave)
            stamps = from_probs(probs.tolist(), audio_length_samples=len(wave), **kwargs)
        else:
            import torch

            stamps = silero_vad.get_speech_timestamps(torch.from_numpy(wave), self._jit, **kwargs)
        return [(s["start"] / 16000, s["end"] / 16000) for s in stamps]


@register_annotator
class VadAnnotator(Annotator):
    name = "vad"
    description = "silero-vad: speech_ratio, speech_seconds, speech_start/end, contains_speech"

    def load(self) -> None:
        self.vad = BatchedSileroVad()

    def annotate(self, utt: Utterance, clip: AudioClip) -> None:
        cfg = self.config.vad
        segments = self.vad.speech_segments(
            clip.wave, threshold=cfg.threshold, min_speech_ms=cfg.min_speech_ms,
            min_silence_ms=cfg.min_silence_ms, speech_pad_ms=cfg.speech_pad_ms,
        )
        clip.speech_segments = segments
        speech = sum(e - s for s, e in segments)
        self.set(utt, "speech_seconds", round(speech, 3))
        self.set(utt, "speech_ratio", round(speech / max(clip.seconds, 1e-9), 3))
        self.set(utt, "contains_speech", speech >= cfg.min_speech_seconds)
        if segments:
            self.set(utt, "speech_start", round(segments[0][0], 3))
            self.set(utt, "speech_end", round(segments[-1][1], 3))
