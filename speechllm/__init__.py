"""speechllm: train speech-aware LLMs the DeSTA2 way.

An audio encoder (Whisper, frozen) and a descriptive-text pipeline turn speech attributes into a
text description; the frozen LLM's own answers about that description become the targets for a
modality adapter, so that the LLM hearing the audio says what it would say reading the text.
"""

__version__ = "0.1.0"
