# Sourced by egs/synthetic/local/probe.sh and egs/mini/local/probe.sh (needs $dump): the real
# recordings the attribute probe adds (the repository's clips, the Debian recordings where their
# packages are installed, the CMU ARCTIC clip of the pysptk sdist where the registry answers) in
# ${real[@]}, and the LLM-reading-the-description reference in ${reference[@]} (LLM_REFERENCE=
# leaves it out).
# shellcheck shell=bash disable=SC2034
real=(--real tests/data/audio)
if python egs/synthetic/local/debian_sounds.py "$dump/debian_sounds"; then
  real+=(--real "$dump/debian_sounds")
else
  echo "probe: real Debian recordings left out (apt-get install alsa-utils sound-theme-freedesktop)" >&2
fi
if python egs/synthetic/local/registry_recordings.py "$dump/registry_recordings"; then
  real+=(--real "$dump/registry_recordings")
fi
reference=(--llm "${LLM_REFERENCE-offline:smollm2-135m-instruct}")
[ -n "${reference[1]}" ] || reference=()
