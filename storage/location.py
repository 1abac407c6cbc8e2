"""Where a store lives: a local directory (`Path`) or an fsspec URL such as `s3://bucket/prefix` (`UPath`).

Both offer the same path API (`/`, `.name`, `.exists()`, `.read_bytes()`, ...), so the stores
are written once; the few places where an object store must behave differently (no rename,
no directories) ask `is_remote`.

Options for the object store come from the environment: `AWS_ENDPOINT_URL` (an S3-compatible
server such as MinIO), credentials as boto reads them (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, ...), and `FACETALK_STORE_OPTIONS`, a JSON object passed
to the fsspec filesystem (e.g. `{"endpoint_url": "http://minio:9000", "anon": false}`), which wins.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from upath import UPath

StorePath = Path | UPath  # a local UPath is a Path; a remote one only shares the API

OPTIONS_ENV = "FACETALK_STORE_OPTIONS"
_S3_PROTOCOLS = ("s3", "s3a")


class StoreLocationError(ValueError):
    """A store root or its options that cannot be used."""


def is_remote(path: StorePath) -> bool:
    """True for an object-store path (no rename, no directories), False for a local one."""
    return isinstance(path, UPath) and not isinstance(path, Path)


def store_path(root: str | os.PathLike | StorePath) -> StorePath:
    """A store root (or a path below one) from a local path or a URL; a remote path passes through."""
    if isinstance(root, Path) or is_remote(root):
        return root
    text = os.fspath(root) if isinstance(root, os.PathLike) else str(root)
    if text.startswith("file://"):
        return Path(text[len("file://") :]).expanduser()
    if "://" not in text:
        return Path(text).expanduser()
    protocol = text.split("://", 1)[0].lower()
    return UPath(text, **store_options(protocol))


def require_local(path: str | os.PathLike, what: str) -> Path:
    """`path` as a local Path, or a one-line StoreLocationError saying that `what` cannot be a URL."""
    text = os.fspath(path) if isinstance(path, os.PathLike) and not is_remote(path) else str(path)
    if "://" in text and not text.startswith("file://"):
        raise StoreLocationError(f"{what} must be a local path (or a mounted filesystem), not a URL: {text!r}")
    return Path(text.removeprefix("file://")).expanduser()


def store_options(protocol: str) -> dict[str, Any]:
    """fsspec options for a store on `protocol`, from the environment (see the module docstring)."""
    # A process-wide listings cache would go stale when another process (or zarr's own
    # filesystem instance) writes; stores check existence, so they must see the bucket as it is.
    options: dict[str, Any] = {"use_listings_cache": False}
    if protocol in _S3_PROTOCOLS and (endpoint := os.environ.get("AWS_ENDPOINT_URL")):
        options["endpoint_url"] = endpoint
    raw = os.environ.get(OPTIONS_ENV, "").strip()
    if raw:
        try:
            extra = json.loads(raw)
        except json.JSONDecodeError as error:
            raise StoreLocationError(f"{OPTIONS_ENV} is not valid JSON ({error}): {raw[:200]!r}") from error
        if not isinstance(extra, dict):
            raise StoreLocationError(
                f"{OPTIONS_ENV} must be a JSON object of fsspec options, got {type(extra).__name__}"
            )
        options.update(extra)
    return options


def make_dirs(path: StorePath) -> None:
    """Create `path` as a directory; object stores have none, so there it does nothing."""
    if not is_remote(path):
        path.mkdir(parents=True, exist_ok=True)


def remove_tree(path: StorePath) -> None:
    """Delete everything at and below `path`, ignoring what is already gone."""
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        path.fs.rm(path.path, recursive=True)
    except FileNotFoundError:
        pass
