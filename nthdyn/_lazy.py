"""Heavy dependencies, imported on first use.

- xarray and pandas (about 0.6 s): only Datasets, NetCDF files, sweeps and fits need
  them, never a solve or a kernel.
- diffrax, with optimistix and lineax (about 0.4 s): only a solve needs them, not the
  kernels, the limits or the data.

Modules write `from .._lazy import xr` instead of `import xarray as xr`; the first
attribute looked up imports the real module and copies its namespace in. (A module
that subclasses a diffrax class, `_problems/_factored.py`, `_solve/_meter.py`, imports
diffrax itself and is imported where it is used.)
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """A stand-in for the module `name` that imports it on first attribute access."""

    def __getattr__(self, attribute: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return getattr(module, attribute)


xr: Any = LazyModule("xarray")
pd: Any = LazyModule("pandas")
diffrax: Any = LazyModule("diffrax")
optx: Any = LazyModule("optimistix")
lx: Any = LazyModule("lineax")
