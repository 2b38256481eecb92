"""Nothing silent: every way a result could be silently wrong is a clear error or a
status that names the cause (each test fails without its fix)."""

import os

import equinox as eqx
import jax
import numpy as np
import pytest
import xarray as xr

import nthdyn as nd


@pytest.fixture(scope="module")
def data():
    return nd.sphere_data(n=4, d=3, key=jax.random.key(1))


def test_huge_inputs_with_save_ntk_are_nonfinite_not_success():
    X = 1e200 * np.eye(3)[:2]
    net = nd.MLP(3, 4, 1, activation="softplus", key=0)
    problem = nd.GradientDescentProblem(net, (X, np.zeros(2)), steps=1, learning_rate=0.1)
    sol = nd.solve(problem, save_ntk=True, throw=False)
    assert not np.all(np.isfinite(sol.ntk)) and sol.status == "nonfinite"


def test_interpolating_at_nan_is_an_error(data):
    sol = nd.solve(nd.GradientFlowProblem(nd.MLP(3, 4, key=0), data, (0.0, 1.0)),
                   saveat=[0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="t=nan: pass finite times"):
        sol(float("nan"))


def test_fit_power_law_needs_three_points():
    da = xr.DataArray([1.0, 0.5], dims="width", coords={"width": [16, 32]})
    with pytest.raises(ValueError, match="2 values of 'width'.*at least 3"):
        nd.fit_power_law(da)


def test_an_ensemble_whose_every_member_fails_raises(data):
    problem = nd.GradientFlowProblem(nd.MLP(3, 4, key=0), data, (0.0, 1.0))
    ens = nd.EnsembleProblem(problem, seeds=range(2))
    with pytest.raises(nd.SolverError, match=r"every member of the ensemble failed.*"
                                             r"max_steps_reached.*keep_failures=True"):
        nd.solve(ens, saveat=[0.0, 1.0], max_steps=2)
    ds = nd.solve(ens, saveat=[0.0, 1.0], max_steps=2, keep_failures=True)
    assert (ds.retcode == 1).all()


def test_a_store_refuses_to_mix_float32_into_float64(data, tmp_path):
    problem = nd.GradientFlowProblem(nd.MLP(3, 4, key=0), data, (0.0, 1.0))
    ens = nd.EnsembleProblem(problem, seeds=range(2),
                             output=lambda p: {"a": p.network.readout[0]})
    nd.solve(ens, store=tmp_path / "store")
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(nd.SweepConfigError, match="float64: stored 1, now 0"):
            nd.solve(ens, store=tmp_path / "store")
    finally:
        jax.config.update("jax_enable_x64", True)


def test_broken_files_give_one_line(tmp_path):
    empty = tmp_path / "empty.nc"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.nc"
    noise.write_bytes(os.urandom(4096))
    good = nd.write_netcdf(xr.Dataset({"a": ("x", np.arange(1000.0))}), tmp_path / "good.nc")
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(good.read_bytes()[:2000])
    for path in (empty, noise, truncated):
        with pytest.raises(ValueError, match=f"{path.name}: not a readable NetCDF file") as error:
            nd.read_netcdf(path)
        assert "\n" not in str(error.value)


def test_write_netcdf_checks_its_arguments(tmp_path):
    with pytest.raises(TypeError, match="write_netcdf takes an xarray.Dataset.*not dict"):
        nd.write_netcdf({"a": 1}, tmp_path / "a.nc")
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        nd.write_netcdf(xr.Dataset({"a": 1.0}), tmp_path / "file" / "a.nc")


def test_part_files_of_dead_writers_are_removed(tmp_path):
    dead = tmp_path / ".result.nc.999999999.abc.part"  # no process has this pid
    dead.write_bytes(b"half a file")
    alive = tmp_path / f".result.nc.{os.getpid()}.abc.part"  # a writer still running
    alive.write_bytes(b"being written")
    nd.write_netcdf(xr.Dataset({"a": 1.0}), tmp_path / "result.nc")
    assert not dead.exists() and alive.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "result.nc"])


def test_dask_executor_checks_the_address():
    with pytest.raises(ValueError, match="address='not-an-address' is not a Dask scheduler "
                                         "address.*tcp://127.0.0.1:8786"):
        nd.DaskExecutor("not-an-address")


def test_nan_weights_are_nonfinite_not_max_steps(data):
    net = nd.MLP(3, 4, key=0)
    bad = eqx.tree_at(lambda n: n.readout, net, net.readout.at[0].set(np.nan))
    sol = nd.solve(nd.GradientFlowProblem(bad, data, (0.0, 1.0)), throw=False)
    assert sol.status == "nonfinite"
    # stopped at once, not after max_steps = 100,000 rejected steps
    assert int(sol.stats["num_steps"]) == 0
    with pytest.raises(nd.SolverError, match="nonfinite: the outputs became non-finite"):
        nd.solve(nd.GradientFlowProblem(bad, data, (0.0, 1.0)))


def test_progress_bars_count_the_span_not_a_rate(data, capfd):
    nd.solve(nd.GradientFlowProblem(nd.MLP(3, 4, key=0), data, (0.0, 1.0)), progress=True)
    err = capfd.readouterr().err
    assert "100.0% of the span" in err and "elapsed" in err and "%/s" not in err


def test_flags_must_be_booleans(data):
    problem = nd.GradientFlowProblem(nd.MLP(3, 4, key=0), data, (0.0, 1.0))
    for name in ("progress", "throw"):
        with pytest.raises(TypeError, match=f"{name}='no': pass True or False"):
            nd.solve(problem, **{name: "no"})
