"""The framework the corpus serves: the dynamic profile (``v60k.sampler``), SFT export (``sft``), chat, evaluation."""
