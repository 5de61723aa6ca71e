"""Studies that run a grid of trainings and measure them (``speechllm study ...``)."""
