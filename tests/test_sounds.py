"""Non-speech sounds, noise at a chosen SNR, simulated rooms and their C50."""

from __future__ import annotations

import math

import numpy as np
import pytest

from speechllm.audio import measures
from speechllm.data import sounds


@pytest.mark.parametrize("kind", sorted(sounds.SOUND_KINDS))
def test_every_kind_is_finite_unit_rms_and_seeded(kind):
    a, words = sounds.make_sound(kind, np.random.default_rng(3), 2.0)
    b, _ = sounds.make_sound(kind, np.random.default_rng(3), 2.0)
    assert a.dtype == np.float32 and a.size == 32000 and np.isfinite(a).all()
    assert np.sqrt(np.mean(a.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-3)
    np.testing.assert_array_equal(a, b)
    assert words and "speech" not in words


def test_heldout_kinds_are_known_and_noise_types_are_sounds():
    assert set(sounds.HELDOUT_SOUND_KINDS) < set(sounds.SOUND_KINDS)
    assert set(sounds.NOISE_TYPES) <= set(sounds.SOUND_KINDS)
    with pytest.raises(sounds.SoundError, match="known: white_noise"):
        sounds.make_sound("thunder", np.random.default_rng(0), 1.0)


def test_noise_colours_have_their_spectral_slope():
    rng = np.random.default_rng(0)
    for colour, slope in (("white", 0.0), ("pink", -1.0), ("brown", -2.0)):
        x = sounds.coloured_noise(rng, 2**16, colour)
        f = np.fft.rfftfreq(x.size, 1 / 16000)
        p = np.abs(np.fft.rfft(x)) ** 2
        band = (f > 100) & (f < 4000)
        fitted = np.polyfit(np.log10(f[band]), np.log10(p[band]), 1)[0]
        assert fitted == pytest.approx(slope, abs=0.15), colour


def test_mix_at_snr_hits_the_snr_on_active_speech():
    rng = np.random.default_rng(1)
    t = np.arange(32000) / 16000
    speech = (0.1 * np.sin(2 * np.pi * 200 * t) * (t > 0.5)).astype(np.float32)  # 0.5 s of silence first
    noise = sounds.coloured_noise(rng, speech.size, "pink")
    for snr in (0.0, 10.0, 30.0):
        mixed = sounds.mix_at_snr(speech, noise, snr)
        added = mixed - speech
        speech_power = 10 ** (measures.active_level_dbfs(speech, 16000) / 10)
        assert 10 * math.log10(speech_power / np.mean(added.astype(np.float64) ** 2)) == pytest.approx(snr, abs=0.01)


def test_c50_of_an_exponential_decay_matches_the_formula():
    sr, tau = 16000, 0.08  # amplitude time constant: energy decays as exp(-2t/tau)
    h = np.exp(-np.arange(sr) / sr / tau)
    expected = 10 * math.log10((1 - math.exp(-0.1 / tau)) / math.exp(-0.1 / tau))
    assert sounds.c50_db(h, sr) == pytest.approx(expected, abs=0.05)
    assert [sounds.reverberation_bin(v) for v in (0.0, 10.0, 20.0)] == ["strong", "moderate", "slight"]


def test_rooms_give_their_rt60_and_c50_falls_with_reverberation():
    pytest.importorskip("pyroomacoustics")
    dry = sounds.random_room(np.random.default_rng(0), rt60_range=(0.2, 0.25))
    live = sounds.random_room(np.random.default_rng(0), rt60_range=(1.1, 1.2))
    assert 0.5 <= dry.distance <= 5.0 and dry.dims == live.dims  # same draws, other walls
    assert dry.c50 > live.c50 + 5
    wave = np.random.default_rng(2).standard_normal(16000).astype(np.float32)
    out = sounds.reverberate(wave, live.rir)
    assert out.size == wave.size + int(0.3 * 16000) and np.isfinite(out).all()


@pytest.mark.parametrize("kind, first, last, gaps, samples, next_draw", [
    ("dtmf", 3601, 22043, 4, [0.0, 1.007963, 0.53939, 0.0, 2.045012], 0.792661919),
    ("chirps", 3301, 17774, 1, [0.0, -0.625198, -2.060808, -1.887122, 0.0], 0.303032427),
])
def test_event_sounds_keep_their_samples_and_draw_order(kind, first, last, gaps, samples, next_draw):
    """Pinned from the corpus generator as it was: a published corpus is re-rendered byte for byte
    from its seed, so where the events fall, what they hold and how many values they draw from the
    generator (the next draw) must not change."""
    rng = np.random.default_rng(7)
    x, _ = sounds.make_sound(kind, rng, 1.5)
    active = np.flatnonzero(x)
    assert (x.size, active[0], active[-1], int(np.sum(np.diff(active) > 1))) == (24000, first, last, gaps)
    np.testing.assert_allclose(x[[2500, 5000, 9000, 15000, 20000]], samples, atol=1e-5)
    assert rng.random() == pytest.approx(next_draw, abs=1e-9)
