"""Dagster layer: assets, checks, partitions, sensors, jobs, resources. `defs` is the code location."""

from pipelines.definitions import defs

__all__ = ["defs"]
