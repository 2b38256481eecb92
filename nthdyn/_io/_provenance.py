"""Provenance of results files: where, when, how and with what they were made."""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import json
import platform
import shlex
import sys
from typing import Any

import jax
import numpy as np

_DEPENDENCIES = ("nthdyn", "jax", "jaxlib", "equinox", "diffrax", "numpy", "scipy",
                 "xarray", "netCDF4")


def versions() -> dict[str, str]:
    """Versions of Python, nthdyn and its main dependencies."""
    return dict(_versions())


@functools.cache
def _versions() -> dict[str, str]:
    # Read once per process: importlib.metadata parses every package's METADATA
    # (about 10 ms a call), and ensembles call to_dataset once per member.
    found = {"python": platform.python_version()}
    for name in _DEPENDENCIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, jax.Array)) and np.ndim(value) == 0:
        return np.asarray(value).item()
    if isinstance(value, (np.ndarray, jax.Array)):
        return np.asarray(value).tolist()
    return repr(value)


def provenance(title: str, config: dict[str, Any]) -> dict[str, str | int]:
    """Global attributes for a results file: where, when, how and with what."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    command = " ".join(shlex.quote(arg) for arg in sys.argv) or "python"
    found = versions()
    return {
        "Conventions": "CF-1.10",
        "title": title,
        "source": f"nthdyn {found['nthdyn']}",
        "history": f"{now}: created by nthdyn ({command})",
        "date_created": now,
        "command": command,
        "float64": int(bool(jax.config.jax_enable_x64)),
        "jax_backend": jax.default_backend(),
        "versions": json.dumps(found),
        "config": json.dumps(config, default=json_default, sort_keys=True),
    }
