"""Results as xarray Datasets and NetCDF4 files, with provenance."""

from ._compare import compare as compare, same_parameters as same_parameters
from ._dataset import (
    data_variables as data_variables,
    solution_dataset as solution_dataset,
    solution_variables as solution_variables,
    to_dataset as to_dataset,
)
from ._netcdf import read_netcdf as read_netcdf, write_netcdf as write_netcdf
from ._provenance import (
    describe_function as describe_function,
    describe_value as describe_value,
    json_default as json_default,
    provenance as provenance,
    versions as versions,
)
from ._variables import attributes as attributes, coordinate as coordinate, variable as variable
