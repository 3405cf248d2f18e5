"""twin_pipeline: privacy-preserving medical digital twins built with Dagster."""

__version__ = "0.1.0"
