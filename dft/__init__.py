"""dft: diversity fine-tuning of text-to-image models, at cluster scale, on Ray."""

__version__ = "0.1.0"
