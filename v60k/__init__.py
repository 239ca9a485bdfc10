"""v60k — build video-grounded role-play corpora, stage by stage."""

__version__ = "0.1.0"
