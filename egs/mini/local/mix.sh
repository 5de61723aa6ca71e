# The mini corpus's mix (sourced by egs/mini/run.sh and egs/mini/local/probe.sh, so the probe set is
# drawn from the same corpus): half natural voices (Kokoro-82M, Piper), a fifth non-speech, the rest
# robotic (flite, espeak-ng); speech gets background noise at a labelled SNR in 30% of rows and a
# simulated room in 25%; half the natural rows are spoken by a gender-converted voice (every voice
# speaks for both genders, so gender must be heard, not recalled from the speaker), and robotic rows
# draw their gender 50/50 as natural ones do (egs/mini/RESULTS.md). Changing the
# non-speech or natural share re-draws which rows are natural, so the first run after a change
# synthesises the new natural rows (cached afterwards).
# shellcheck disable=SC2034
synth_mix="--natural 0.5 --nonspeech 0.2 --noisy 0.3 --reverb 0.25 --converted 0.5 --balance-gender"
