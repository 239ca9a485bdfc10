"""What the corpus serves: one role-play format (``format``) for the SFT export, chat and evaluation. The
dynamic profile's frames come from ``v60k.media.frame_sampler``."""
