"""xarray and pandas, imported on first use.

They take about 0.6 s to import, a third of `import nthdyn`, and a solve or a kernel
never touches them: only Datasets, NetCDF files, sweeps and fits do. Modules write
`from ._lazy import xr` instead of `import xarray as xr`; the first attribute looked
up imports the real module and copies its namespace in.
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
