"""`--help` that shows every option's default, and the version of the installed package."""

from __future__ import annotations

import argparse
from pathlib import Path

PACKAGE = "facetalk-pipeline"


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Append `(default: X)` to an option's help unless it has no default or already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default == argparse.SUPPRESS  # `is`: 0 is a default
        if "default" in text or unset or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:  # a bare checkout on PYTHONPATH, not installed
        return "unknown (not installed)"


CHECKOUT = Path(__file__).resolve().parents[1]  # the folder holding pipelines/: a git checkout, or site-packages


def ui_hint(dagster_home: Path, checkout: Path = CHECKOUT) -> str:
    """How to open the Dagster UI on `dagster_home` from where the user is: `make ui` inside a checkout
    (a Makefile and workspace.yaml beside pipelines/), else `dagster dev` on the installed package."""
    if (checkout / "Makefile").is_file() and (checkout / "workspace.yaml").is_file():
        return f"`make ui` in {checkout}"
    return f"`DAGSTER_HOME={dagster_home} dagster dev -m pipelines -h 127.0.0.1`"
