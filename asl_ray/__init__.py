"""asl-ray: Ray-distributed extraction, training and tuning for isolated sign recognition."""

__version__ = "0.1.0"
