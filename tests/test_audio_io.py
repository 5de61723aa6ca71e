"""Audio decoding: formats, downmix, resampling, segments and every typed error."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from speechllm.audio import (
    AUDIO_ERROR_KINDS,
    SAMPLE_RATE,
    AllZeroAudioError,
    AudioError,
    AudioTooLongError,
    AudioTooShortError,
    EmptyAudioError,
    MissingAudioError,
    NonFiniteAudioError,
    TruncatedAudioError,
    UnreadableAudioError,
    audio_info,
    load_audio,
    resample,
)
from speechllm.errors import SpeechLLMError


def tone(freq: float, sr: int, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(wave: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / sr)[np.argmax(spectrum)])


def test_stereo_44k_tone_resamples_to_16k_mono_and_keeps_its_pitch(tmp_path):
    left = tone(1000, 44_100, 1.0)
    path = tmp_path / "tone.wav"
    sf.write(path, np.stack([left, left], axis=1), 44_100)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - SAMPLE_RATE) <= 1
    assert dominant_frequency(wave, SAMPLE_RATE) == pytest.approx(1000, abs=2)
    # Amplitude survives the resampler (steady state, away from the edges).
    assert np.abs(wave[2000:-2000]).max() == pytest.approx(0.3, abs=0.01)


def test_downmix_averages_channels(tmp_path):
    sr = 16_000
    left = np.full(sr, 0.5, dtype=np.float32)
    right = np.full(sr, -0.1, dtype=np.float32)
    path = tmp_path / "dc.wav"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="FLOAT")
    wave = load_audio(path)
    assert np.allclose(wave, 0.2, atol=1e-6)


@pytest.mark.parametrize("fmt,ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")])
def test_decodes_every_supported_format(tmp_path, fmt, ext):
    path = tmp_path / f"tone.{ext}"
    sf.write(path, tone(440, 22_050, 0.5), 22_050, format=fmt)
    info = audio_info(path)
    assert info.sample_rate == 22_050 and info.channels == 1
    assert info.duration == pytest.approx(0.5, abs=0.06)  # mp3/ogg pad a little
    wave = load_audio(path)
    assert len(wave) == pytest.approx(8000, abs=1000)
    assert dominant_frequency(wave, SAMPLE_RATE) == pytest.approx(440, abs=5)


def test_segment_read_returns_exactly_that_span(tmp_path):
    sr = 16_000
    # A ramp makes every sample's position visible in its value.
    ramp = (np.arange(sr * 3) / (sr * 3)).astype(np.float32)
    path = tmp_path / "ramp.wav"
    sf.write(path, ramp, sr, subtype="FLOAT")
    seg = load_audio(path, offset=1.0, duration=0.5)
    assert len(seg) == 8000
    assert np.allclose(seg, ramp[16_000:24_000])
    tail = load_audio(path, offset=2.5)
    assert np.allclose(tail, ramp[40_000:])
    # A segment running past the end is cut at the end.
    assert len(load_audio(path, offset=2.8, duration=1.0)) == int(0.2 * sr)


def test_segment_read_resamples_from_the_file_rate(tmp_path):
    sr = 48_000
    path = tmp_path / "long.flac"
    wave = np.concatenate([tone(500, sr, 1.0), tone(2000, sr, 1.0)])
    sf.write(path, wave, sr)
    second = load_audio(path, offset=1.0, duration=1.0)
    assert len(second) == SAMPLE_RATE
    assert dominant_frequency(second, SAMPLE_RATE) == pytest.approx(2000, abs=3)


def test_missing_file(tmp_path):
    with pytest.raises(MissingAudioError, match="no such file") as err:
        load_audio(tmp_path / "nope.wav")
    assert err.value.kind == "missing" and "nope.wav" in str(err.value)
    with pytest.raises(MissingAudioError):
        audio_info(tmp_path / "nope.wav")


def test_unreadable_file_and_folder(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all, just text" * 10)
    with pytest.raises(UnreadableAudioError, match="cannot decode") as err:
        load_audio(junk)
    assert err.value.kind == "unreadable" and str(junk) in str(err.value)
    with pytest.raises(UnreadableAudioError, match="folder"):
        load_audio(tmp_path)


def test_empty_file_and_header_only_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(EmptyAudioError, match="0 bytes"):
        load_audio(empty)
    header_only = tmp_path / "header.wav"
    sf.write(header_only, np.zeros(0, dtype=np.float32), 16_000)
    with pytest.raises(EmptyAudioError, match="no samples"):
        load_audio(header_only)


def test_offset_past_the_end_and_bad_duration(tmp_path):
    path = tmp_path / "one.wav"
    sf.write(path, tone(300, 16_000, 1.0), 16_000)
    with pytest.raises(EmptyAudioError, match="outside the file"):
        load_audio(path, offset=2.0)
    with pytest.raises(EmptyAudioError, match="not positive"):
        load_audio(path, duration=0.0)


def test_nan_and_inf(tmp_path):
    for bad in (np.nan, np.inf):
        wave = tone(300, 16_000, 0.5)
        wave[100] = bad
        path = tmp_path / f"bad_{bad}.wav"
        sf.write(path, wave, 16_000, subtype="FLOAT")
        with pytest.raises(NonFiniteAudioError) as err:
            load_audio(path)
        assert err.value.kind == "nan_or_inf"
    # check=False lets a caller that cleans audio itself have the raw samples.
    assert np.isinf(load_audio(path, check=False, sample_rate=16_000)).any()


def test_all_zero(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(16_000, dtype=np.float32), 16_000)
    with pytest.raises(AllZeroAudioError, match="all samples are zero"):
        load_audio(path)


def test_too_short_uses_seconds_not_samples(tmp_path):
    short = tmp_path / "short.wav"
    sf.write(short, tone(300, 8_000, 0.05), 8_000)
    with pytest.raises(AudioTooShortError, match="shorter than 0.1"):
        load_audio(short)
    ok = tmp_path / "ok.wav"
    sf.write(ok, tone(300, 8_000, 0.12), 8_000)
    assert len(load_audio(ok)) == pytest.approx(0.12 * SAMPLE_RATE, abs=2)
    assert len(load_audio(short, min_seconds=0.01)) == pytest.approx(800, abs=2)


def test_too_long_is_refused_from_the_header(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, tone(300, 16_000, 3.0), 16_000)
    with pytest.raises(AudioTooLongError, match="longer than the 2.0s limit"):
        load_audio(path, max_seconds=2.0)
    # The limit applies to the segment, not the file.
    assert len(load_audio(path, offset=1.0, duration=1.5, max_seconds=2.0)) == 24_000


def test_error_kinds_are_distinct_and_user_fixable():
    kinds = [cls.kind for cls in (MissingAudioError, UnreadableAudioError, EmptyAudioError,
                                  NonFiniteAudioError, AllZeroAudioError, AudioTooShortError,
                                  AudioTooLongError, TruncatedAudioError)]
    assert tuple(kinds) == AUDIO_ERROR_KINDS and len(set(kinds)) == len(kinds)
    assert issubclass(AudioError, SpeechLLMError)


def test_resample_identity_and_length():
    x = tone(100, 16_000, 1.0)
    assert resample(x, 16_000) is x or np.array_equal(resample(x, 16_000), x)
    y = resample(x, 16_000, 8_000)
    assert y.dtype == np.float32 and len(y) == 8000


def _cut(path, keep_fraction):
    """A copy of ``path`` cut short (a copy interrupted mid-file), header untouched."""
    data = path.read_bytes()
    cut = path.with_name("cut_" + path.name)
    cut.write_bytes(data[:int(len(data) * keep_fraction)])
    return cut


def test_truncated_wav_is_refused_where_the_header_promises_more(tmp_path):
    full = tmp_path / "two.wav"
    sf.write(full, tone(300, 16_000, 2.0), 16_000)  # 16-bit: 64,000 data bytes after a 44-byte header
    cut = _cut(full, 0.5)
    # libsndfile quietly reports the shorter length; the RIFF header still promises 2 s.
    assert sf.info(str(cut)).frames < 16_000
    info = audio_info(cut)
    assert info.header_frames == 32_000 and info.frames < 16_000 and info.truncated
    assert not audio_info(full).truncated and audio_info(full).header_frames is None
    with pytest.raises(TruncatedAudioError) as err:
        load_audio(cut)
    assert err.value.kind == "truncated"
    assert str(err.value) == (f"{cut}: truncated: the header promises 2.000s but the file holds only "
                              f"{info.frames / 16_000:.3f}s (an interrupted copy or download?); copy or "
                              "convert the file again")
    # A segment inside the part that is there is fine; one reaching into the missing part is not.
    assert len(load_audio(cut, offset=0.1, duration=0.5)) == 8_000
    with pytest.raises(TruncatedAudioError):
        load_audio(cut, offset=0.5, duration=1.0)
    with pytest.raises(TruncatedAudioError):
        load_audio(cut, offset=1.5)


def test_truncated_mp3_is_refused_when_it_decodes_shorter_than_its_header(tmp_path):
    full = tmp_path / "two.mp3"
    sf.write(full, tone(300, 16_000, 2.0), 16_000, format="MP3")
    assert len(load_audio(full)) == 32_000
    cut = _cut(full, 0.5)
    with pytest.raises(TruncatedAudioError, match=r"truncated: the header promises 2\.000s but only .* could be decoded"):
        load_audio(cut)
    with pytest.raises(TruncatedAudioError):
        load_audio(cut, offset=1.5, duration=0.25)  # past what decodes, inside what the header says
