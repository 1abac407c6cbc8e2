"""Dagster layer: assets, checks, partitions, sensors, jobs, resources. `defs` is the code location.

`defs` is loaded on first access (PEP 562), so `facetalk animate` and other commands that need
no Dagster definitions do not pay for importing them; `dagster -m pipelines` finds it through
`dir()` as before."""

from typing import Any

__all__ = ["defs"]


def __getattr__(name: str) -> Any:
    if name == "defs":
        from pipelines.definitions import defs

        return defs
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "defs"])
