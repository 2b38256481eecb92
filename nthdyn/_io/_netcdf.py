"""NetCDF4 files, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import xarray as xr


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
