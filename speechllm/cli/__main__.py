"""``python -m speechllm.cli`` (what ``accelerate launch -m speechllm.cli train ...`` runs)."""

from speechllm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
