"""reelbot: image and video generation from chat."""

__version__ = "0.1.0"
