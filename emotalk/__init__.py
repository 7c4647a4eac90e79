"""emotalk: emotion-controllable, one-shot talking-face generation."""
__version__ = "0.1.0"
