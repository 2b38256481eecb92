"""Results as xarray Datasets and NetCDF4 files, with provenance.

Conventions (CF): every variable has `long_name` and `units` (`"1"` for
dimensionless, training time included, so that it is not decoded as a
duration); status codes carry `flag_values`/`flag_meanings`; the dataset carries
`Conventions`, `title`, `source`, `history`, creation time, dependency versions
and the configuration as a JSON string. Attribute values are strings or numbers.
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import json
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
import xarray as xr

from ._solution import RETCODES, Solution

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


def _json_default(value: Any) -> Any:
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
        "config": json.dumps(config, default=_json_default, sort_keys=True),
    }


def _variable(dims, values, long_name, units="1", **attrs):
    return (dims, np.asarray(values), {"long_name": long_name, "units": units, **attrs})


def to_dataset(solution: Solution, *, title: str | None = None) -> xr.Dataset:
    """An `xarray.Dataset` of a solution.

    Dimensions `time`, `sample` (training index), `sample_b` (second kernel
    index), `test`, `input_dim`. Variables: `f`, `dfdt`, `loss`, `y`, `X`, and
    when present `ntk`, `f_test`, `X_test`; `retcode` with CF flags.
    """
    problem = solution.problem
    discrete = solution.dfdt is None
    time_name = "gradient-descent step" if discrete else "training time t (gradient flow, eq. 3)"
    data_vars = {
        "f": _variable(("time", "sample"), solution.f, "network output on training inputs f(x_a, theta_t)"),
        "loss": _variable(("time",), solution.loss, "training loss L = 1/(2n) sum (f - y)^2"),
        "y": _variable(("sample",), problem.data.y, "training label y_a"),
        "X": _variable(("sample", "input_dim"), problem.data.X, "training input x_a"),
        "retcode": ((), np.int32(solution.retcode), {
            "long_name": "solver status",
            "units": "1",
            "flag_values": np.array(list(RETCODES), dtype=np.int32),
            "flag_meanings": " ".join(RETCODES.values()),
        }),
    }
    if not discrete:
        data_vars["dfdt"] = _variable(("time", "sample"), solution.dfdt,
                                      "time derivative of f, -1/n K2 (f - y) (eq. 6)")
    if solution.ntk is not None:
        data_vars["ntk"] = _variable(("time", "sample", "sample_b"), solution.ntk,
                                     "neural tangent kernel K2(x_a, x_b) (eq. 7)")
    if solution.f_test is not None:
        data_vars["f_test"] = _variable(("time", "test"), solution.f_test, "network output on test inputs")
        data_vars["X_test"] = _variable(("test", "input_dim"), problem.test, "test input")
        if solution.dfdt_test is not None:
            data_vars["dfdt_test"] = _variable(("time", "test"), solution.dfdt_test,
                                               "time derivative of the test outputs (eq. 6, 22)")
    n = problem.data.n
    coords = {
        "time": ("time", np.asarray(solution.t), {"long_name": time_name, "units": "1"}),
        "sample": ("sample", np.arange(n), {"long_name": "training sample index", "units": "1"}),
    }
    if solution.ntk is not None:
        coords["sample_b"] = ("sample_b", np.arange(n),
                              {"long_name": "training sample index (second kernel slot)", "units": "1"})
    if solution.f_test is not None:
        coords["test"] = ("test", np.arange(problem.test.shape[0]),
                          {"long_name": "test point index", "units": "1"})
    config = {**problem.config(), "solver": solution.solver, "options": solution.options,
              "stats": solution.stats}
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update(provenance(title or f"nthdyn {problem.config()['problem']} solution", config))
    for key, value in solution.stats.items():
        ds.attrs[key] = value
    return ds


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write `ds` to NetCDF4 atomically: to a temporary file in the same folder,
    flushed to disk, then renamed over `path`. An interrupted write leaves the old
    file (or none), never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(handle)
    try:
        ds.to_netcdf(temporary, engine="netcdf4", format="NETCDF4")
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private (0600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_netcdf(path: str | os.PathLike) -> xr.Dataset:
    """Load a results file fully into memory (the file is closed afterwards)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such results file.")
    return xr.load_dataset(path, engine="netcdf4")
