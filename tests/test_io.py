"""Results as xarray Datasets and NetCDF4 files: dimensions, CF attributes,
provenance, exact round trip, atomic writes."""

import datetime
import json
import os

import jax
import numpy as np
import pytest
import xarray as xr

import nthdyn as nd


@pytest.fixture(scope="module")
def flow_dataset(flow_solution):
    return nd.to_dataset(flow_solution, title="test flow")


@pytest.fixture(scope="module")
def descent_solution(flow_problem):
    problem = nd.GradientDescentProblem(flow_problem.network, flow_problem.data, 4, 0.02)
    return nd.solve(problem)


def test_dimensions_and_values(flow_solution, flow_dataset):
    ds = flow_dataset
    assert dict(ds.sizes) == {"time": 101, "sample": 4, "sample_b": 4, "test": 3, "input_dim": 3}
    assert ds["f"].dims == ("time", "sample")
    assert ds["dfdt"].dims == ("time", "sample")
    assert ds["ntk"].dims == ("time", "sample", "sample_b")
    assert ds["f_test"].dims == ("time", "test")
    assert ds["loss"].dims == ("time",)
    assert ds["X"].dims == ("sample", "input_dim") and ds["X_test"].dims == ("test", "input_dim")
    assert ds["retcode"].dims == () and int(ds["retcode"]) == 0
    np.testing.assert_array_equal(ds["time"], flow_solution.t)
    np.testing.assert_array_equal(ds["f"], flow_solution.f)
    np.testing.assert_array_equal(ds["ntk"], flow_solution.ntk)
    np.testing.assert_array_equal(ds["y"], flow_solution.y)
    assert ds["f"].dtype == np.float64


def test_descent_dataset(descent_solution):
    ds = nd.to_dataset(descent_solution)
    assert dict(ds.sizes) == {"time": 5, "sample": 4, "input_dim": 3}  # no ntk: no sample_b
    assert "dfdt" not in ds and "ntk" not in ds and "f_test" not in ds
    np.testing.assert_array_equal(ds["time"], np.arange(5.0))
    assert "step" in ds["time"].attrs["long_name"]
    assert ds.attrs["title"] == "nthdyn GradientDescentProblem solution"
    assert json.loads(ds.attrs["config"])["learning_rate"] == 0.02


def _all_variables(ds):
    return {**ds.coords, **ds.data_vars}


def test_every_variable_has_long_name_and_units(flow_dataset):
    for name, variable in _all_variables(flow_dataset).items():
        assert isinstance(variable.attrs.get("long_name"), str) and variable.attrs["long_name"], name
        if name == "retcode":
            values = np.asarray(variable.attrs["flag_values"])
            meanings = variable.attrs["flag_meanings"].split()
            assert values.tolist() == sorted(nd.RETCODES)
            assert meanings == [nd.RETCODES[int(v)] for v in values]
            assert variable.attrs["units"] == "1"
        else:
            assert isinstance(variable.attrs.get("units"), str), name
    # training time is dimensionless, not a duration that xarray would decode
    assert flow_dataset["time"].attrs["units"] == "1"


def test_provenance_attributes(flow_dataset):
    attrs = flow_dataset.attrs
    assert attrs["Conventions"].startswith("CF-")
    assert attrs["title"] == "test flow"
    assert attrs["source"].startswith("nthdyn ")
    assert "nthdyn" in attrs["history"]
    datetime.datetime.fromisoformat(attrs["date_created"])
    versions = json.loads(attrs["versions"])
    assert {"python", "nthdyn", "jax", "diffrax", "xarray"} <= set(versions)
    assert versions["jax"] == jax.__version__
    config = json.loads(attrs["config"])
    assert config["network"]["width"] == 8 and config["network"]["depth"] == 2
    assert config["network"]["activation"] == "tanh"
    assert config["problem"] == "GradientFlowProblem" and config["tspan"] == [0.0, 1.0]
    assert (config["n"], config["n_test"], config["solver"]) == (4, 3, "Dopri8")
    assert config["options"]["rtol"] == 1e-12
    assert attrs["float64"] == 1
    assert int(flow_dataset["num_accepted_steps"]) >= 100 and config["stats"]["num_accepted_steps"] >= 100


def test_no_attribute_is_none_bool_or_dict(flow_dataset):
    """NetCDF attributes must be strings, numbers or numeric arrays."""
    owners = {"<global>": flow_dataset.attrs,
              **{name: v.attrs for name, v in _all_variables(flow_dataset).items()}}
    for owner, attrs in owners.items():
        for key, value in attrs.items():
            assert value is not None, (owner, key)
            assert not isinstance(value, (bool, np.bool_, dict, list, tuple)), (owner, key)
            assert isinstance(value, (str, int, float, np.integer, np.floating, np.ndarray)), (
                owner, key, type(value))
            if isinstance(value, np.ndarray):
                assert value.dtype.kind in "iuf", (owner, key)


@pytest.mark.parametrize("which", ["flow", "descent"])
def test_netcdf_round_trip_is_exact(which, flow_dataset, descent_solution, tmp_path):
    ds = flow_dataset if which == "flow" else nd.to_dataset(descent_solution)
    path = nd.write_netcdf(ds, tmp_path / "sub" / f"{which}.nc")  # creates the folder
    assert path == tmp_path / "sub" / f"{which}.nc" and path.is_file()
    with xr.open_dataset(path, engine="netcdf4") as back:
        back = back.load()
    xr.testing.assert_identical(back, ds)
    for name, variable in _all_variables(ds).items():
        assert back[name].dtype == variable.dtype, name
        np.testing.assert_array_equal(back[name].values, variable.values)
    xr.testing.assert_identical(nd.read_netcdf(path), ds)


def test_read_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such results file"):
        nd.read_netcdf(tmp_path / "missing.nc")


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_interrupted_write_keeps_old_file(error, flow_dataset, tmp_path, monkeypatch):
    path = tmp_path / "result.nc"
    nd.write_netcdf(flow_dataset, path)
    original = path.read_bytes()

    def broken_to_netcdf(self, target, *args, **kwargs):
        with open(target, "wb") as stream:
            stream.write(b"partial garbage")
        raise error

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken_to_netcdf)
    with pytest.raises(type(error)):
        nd.write_netcdf(flow_dataset.isel(time=slice(0, 3)), path)
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["result.nc"]  # no temporary file left behind


def test_interrupted_first_write_leaves_nothing(flow_dataset, tmp_path, monkeypatch):
    def broken_to_netcdf(self, target, *args, **kwargs):
        with open(target, "wb") as stream:
            stream.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken_to_netcdf)
    with pytest.raises(OSError, match="disk full"):
        nd.write_netcdf(flow_dataset, tmp_path / "new.nc")
    assert os.listdir(tmp_path) == []
