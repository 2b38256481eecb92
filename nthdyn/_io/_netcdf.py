"""NetCDF4 files, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .._lazy import xr


def _as_path(path, function: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        what = repr(path) if len(repr(path)) <= 40 else type(path).__name__
        raise TypeError(f"{function}(path={what}): pass a file path (str or pathlib.Path), "
                        "e.g. 'results/flow.nc'.")
    return Path(path)


def _remove_dead_parts(path: Path) -> None:
    """Remove the temporary files of writers of `path` that were killed (their pid,
    in the name, is no longer running); a writer that is alive keeps its own."""
    for part in path.parent.glob(f".{path.name}.*.part"):
        try:
            pid = int(part.name[len(path.name) + 2:].split(".")[0])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            part.unlink(missing_ok=True)
        except PermissionError:  # alive, and someone else's
            pass


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write `ds` to NetCDF4 atomically: to a temporary file in the same folder,
    flushed to disk, then renamed over `path`. An interrupted write leaves the old
    file (or none), never a partial one; the temporary files of killed writers are
    removed by the next write of the same path."""
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"write_netcdf takes an xarray.Dataset (e.g. nd.to_dataset(solution)), "
                        f"not {type(ds).__name__}.")
    path = _as_path(path, "write_netcdf")
    for folder in (path.parent, *path.parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise NotADirectoryError(f"write_netcdf({str(path)!r}): {str(folder)!r} is a "
                                         "file, not a folder; choose another path.")
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_parts(path)
    ds = ds.copy(deep=False)
    for name, variable in ds.variables.items():
        if variable.dtype.kind in "OU" and "dtype" not in variable.encoding:
            # CF 1.8 has no variable-length strings: write text as a char array
            ds[name].encoding = {**variable.encoding, "dtype": "S1"}
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".part",
                                         dir=path.parent)
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
    path = _as_path(path, "read_netcdf")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such results file.")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; pass a .nc file (a sweep store's "
                                "combined result is store/ensemble.nc; see also nthdyn.open_sweep).")
    try:
        return xr.load_dataset(path, engine="netcdf4")
    except Exception as error:  # netCDF4/HDF5 say "HDF error" and the like: name the file
        reason = " ".join(str(error).split()) or type(error).__name__
        size = path.stat().st_size
        raise ValueError(
            f"{path.name}: not a readable NetCDF file ({size} bytes; {reason[:200]}). It may be "
            f"empty, cut short by an interrupted copy, or not a NetCDF file: {path}"
        ) from None
