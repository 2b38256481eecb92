"""Provenance of results files: where, when, how and with what they were made."""

from __future__ import annotations

import datetime
import hashlib
import inspect
import numbers
from collections.abc import Callable
import functools
import importlib.metadata
import json
import platform
import shlex
import sys
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

_DEPENDENCIES = ("nthdyn", "jax", "jaxlib", "equinox", "diffrax", "numpy", "scipy",
                 "xarray", "netCDF4")


#: The CF conventions the files follow (checked by cfchecks in the tests).
CONVENTIONS = "CF-1.8"
#: The papers whose equations the variables cite (global `references` attribute).
REFERENCES = (
    "Huang & Yau, Dynamics of Deep Neural Networks and Neural Tangent Hierarchy, ICML 2020 "
    "(arXiv:1909.08156); Jacot, Gabriel & Hongler, Neural Tangent Kernel: Convergence and "
    "Generalization in Neural Networks, NeurIPS 2018 (arXiv:1806.07572)")


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
        "Conventions": CONVENTIONS,
        "references": REFERENCES,
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


def describe_value(value: Any) -> Any:
    """A JSON-ready identity of a value: numbers and strings as they are, arrays and
    modules by a SHA-256 of their contents."""
    if isinstance(value, (bool, numbers.Number, str)) or value is None:
        return value
    if isinstance(value, (np.ndarray, jax.Array)):
        return {"array_sha256": hashlib.sha256(np.asarray(value).tobytes()).hexdigest()}
    if isinstance(value, eqx.Module):
        arrays, static = eqx.partition(value, eqx.is_array)
        digest = hashlib.sha256()
        for leaf in jax.tree_util.tree_leaves(arrays):
            digest.update(np.asarray(jax.random.key_data(leaf) if jnp.issubdtype(
                leaf.dtype, jax.dtypes.prng_key) else leaf).tobytes())
        return {"module": eqx.tree_pformat(static, short_arrays=True), "sha256": digest.hexdigest()}
    return repr(value)


def describe_function(function: Callable[..., Any]) -> dict[str, str]:
    """Name and source hash of a function (so a sweep store notices edits). The
    module is left out when it is a script's (`__main__`, or `__nthdyn_case__`
    under `nthdyn run`): the same case file gives the same name either way."""
    name = getattr(function, "__qualname__", repr(function))
    module = getattr(function, "__module__", None) or ""
    if not module.startswith("__"):
        name = f"{module}.{name}"
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        source = repr(function)
    return {"name": name, "source_sha256": hashlib.sha256(source.encode()).hexdigest()}
