"""Media analysis: stream facts and audio/frame extraction (``streams``), shot detection and the adaptive
temporal frame sampler (the dynamic profile)."""
