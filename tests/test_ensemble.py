"""Ensembles: vmapped members equal single solves, keys independent of batching,
failures recorded per member, any remake-able field as an axis, nice errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import nthdyn as nd


@pytest.fixture
def flow(small_data):
    net = nd.MLP(in_size=3, width=8, depth=1, activation="tanh", key=0)
    return nd.GradientFlowProblem(net, small_data, tspan=(0.0, 1.0))


def kernel(problem):
    """A pure JAX output: K2 at initialisation."""
    return {"K2": (("sample", "sample_b"), nd.ntk_structured(problem.network, problem.data.X))}


def key_and_readout(problem):
    return {"key": ("two", jax.random.key_data(problem.network.key)),
            "readout": ("unit", problem.network.readout)}


def test_vmapped_flow_equals_loop_of_solves(flow):
    saveat = jnp.linspace(0.0, 1.0, 5)
    ens = nd.EnsembleProblem(flow, seeds=[0, 1, 5], widths=[8])
    ds = nd.solve(ens, nd.Tsit5(), saveat=saveat, rtol=1e-9, atol=1e-9)
    assert ds.f.dims == ("seed", "width", "time", "sample")
    assert ds.seed.values.tolist() == [0, 1, 5] and ds.width.values.tolist() == [8]
    assert (ds.retcode == 0).all() and (ds.message == "").all()
    for seed in (0, 1, 5):
        sol = nd.solve(ens.member(seed=seed, width=8), nd.Tsit5(), saveat=saveat,
                       rtol=1e-9, atol=1e-9)
        member = ds.sel(seed=seed, width=8)
        np.testing.assert_allclose(member.f, sol.f, rtol=0, atol=1e-12)
        np.testing.assert_allclose(member.dfdt, sol.dfdt, rtol=0, atol=1e-12)
        np.testing.assert_allclose(member.loss, sol.loss, rtol=0, atol=1e-12)
        assert int(member.num_steps) == sol.stats["num_steps"]
    np.testing.assert_array_equal(ds.X, flow.data.X)  # data stored once, not per member


def test_member_is_remake_with_folded_key(flow):
    ens = nd.EnsembleProblem(flow, seeds=range(3), widths=[16], master_seed=7)
    member = ens.member(seed=2, width=16)
    expected = nd.remake(flow, width=16, key=jax.random.fold_in(jax.random.key(7), 2))
    np.testing.assert_array_equal(member.network.readout, expected.network.readout)
    np.testing.assert_array_equal(member.network.weights[0], expected.network.weights[0])


def test_output_function_vmapped_equals_loop(flow):
    ens = nd.EnsembleProblem(flow, seeds=range(4), widths=[8], axes={"depth": [1, 2]},
                             output=kernel)
    ds = nd.solve(ens)
    assert ds.K2.dims == ("seed", "width", "depth", "sample", "sample_b")
    for width in (8,):
        for depth in (1, 2):
            for seed in range(4):
                member = ens.member(seed=seed, width=width, depth=depth)
                K2 = nd.ntk(member.network, member.data.X)
                np.testing.assert_allclose(ds.K2.sel(seed=seed, width=width, depth=depth), K2,
                                           rtol=0, atol=1e-12)


def test_keys_independent_of_batch_size_and_order(flow):
    ens = nd.EnsembleProblem(flow, seeds=[4, 0, 9, 2, 7], widths=[8], master_seed=3,
                             output=key_and_readout)
    reference = nd.solve(ens, batch_size=5)
    for batch_size in (1, 2, 3):
        ds = nd.solve(ens, batch_size=batch_size)
        np.testing.assert_array_equal(ds.key, reference.key)
        np.testing.assert_allclose(ds.readout, reference.readout, rtol=0, atol=1e-12)
    for seed in (4, 0, 9, 2, 7):
        expected = jax.random.key_data(jax.random.fold_in(jax.random.key(3), seed))
        np.testing.assert_array_equal(reference.key.sel(seed=seed, width=8), expected)
    reordered = nd.solve(nd.EnsembleProblem(flow, seeds=[0, 2, 4, 7, 9], widths=[8],
                                            master_seed=3, output=key_and_readout))
    np.testing.assert_allclose(reordered.readout.sel(seed=reference.seed),
                               reference.readout, rtol=0, atol=1e-12)


def test_output_needing_concrete_values_falls_back_to_eager_vmap(flow):
    """A Python `if` on the (unbatched) data cannot be jitted; it still runs under an
    eager vmap, batched over seeds."""
    def checked_kernel(problem):
        if not bool(jnp.all(jnp.isfinite(problem.data.X))):
            raise ValueError("non-finite inputs")
        return kernel(problem)

    ds = nd.solve(nd.EnsembleProblem(flow, seeds=range(3), output=checked_kernel))
    assert ds.K2.dims == ("seed", "sample", "sample_b") and (ds.retcode == 0).all()
    member = nd.EnsembleProblem(flow, seeds=range(3)).member(seed=1)
    np.testing.assert_allclose(ds.K2.sel(seed=1), nd.ntk(member.network, member.data.X),
                               rtol=0, atol=1e-12)


def test_failed_members_are_recorded_not_raised(flow):
    bad_key = np.asarray(jax.random.key_data(nd.member_key(2)))
    nan_key = np.asarray(jax.random.key_data(nd.member_key(1)))

    def fragile(problem):
        key = np.asarray(jax.random.key_data(problem.network.key))
        if np.array_equal(key, bad_key):
            raise FloatingPointError("member 2 blew up")
        value = float(problem.network.readout[0])
        return {"value": np.nan if np.array_equal(key, nan_key) else value}

    ds = nd.solve(nd.EnsembleProblem(flow, seeds=range(4), widths=[8, 16], output=fragile,
                                     vmap=False))
    status = ds.retcode.sel(width=8).values.tolist()
    assert status == [0, 2, 4, 0]  # success, nonfinite, member_error, success
    assert "member 2 blew up" in str(ds.message.sel(seed=2, width=8).values)
    assert np.isnan(ds.value.sel(seed=2)).all() and np.isfinite(ds.value.sel(seed=3)).all()
    assert ds.retcode.attrs["flag_meanings"].split()[4] == "member_error"
    np.testing.assert_array_equal(ds.retcode.attrs["flag_values"], [0, 1, 2, 3, 4, 5])


def test_solver_failure_is_a_status(flow):
    ens = nd.EnsembleProblem(flow, seeds=range(2), vmap=False)  # members one at a time
    ds = nd.solve(ens, nd.Tsit5(), saveat=[0.0, 1.0], max_steps=2, keep_failures=True)
    assert (ds.retcode == 1).all()  # max_steps_reached, not an exception
    assert ds.f.dims == ("seed", "time", "sample")


def test_any_field_is_an_axis(small_data):
    net = nd.MLP(in_size=3, width=8, depth=1, key=0)
    problem = nd.GradientFlowProblem(net, small_data, tspan=(0.0, 1.0))
    circle = nd.TrainingSet(small_data.X[:, ::-1], small_data.y)
    ens = nd.EnsembleProblem(problem, seeds=range(2), axes={
        "activation": ["tanh", nd.Erf()], "sw": [0.5],
        "data": {"sphere": small_data, "reversed": circle}}, output=kernel)
    ds = nd.solve(ens)
    assert ds.K2.dims[:4] == ("seed", "activation", "sw", "data")
    assert ds.activation.values.tolist() == ["tanh", "erf"]
    assert ds.data.values.tolist() == ["sphere", "reversed"]
    member = ens.member(seed=1, activation="erf", sw=0.5, data="reversed")
    assert member.network.sw == 0.5
    np.testing.assert_allclose(ds.K2.sel(seed=1, activation="erf", sw=0.5, data="reversed"),
                               nd.ntk(member.network, circle.X), rtol=0, atol=1e-12)


def test_without_seeds_uses_the_problems_network(flow):
    ds = nd.solve(nd.EnsembleProblem(flow, widths=[8, 12], output=kernel))
    assert ds.K2.dims == ("width", "sample", "sample_b") and "seed" not in ds.dims
    np.testing.assert_allclose(ds.K2.sel(width=8), nd.ntk(flow.network, flow.data.X),
                               rtol=0, atol=1e-12)


def test_gradient_descent_members_one_at_a_time(small_data):
    net = nd.MLP(in_size=3, width=8, depth=1, key=0)
    problem = nd.GradientDescentProblem(net, small_data, steps=4, learning_rate=0.5)
    ens = nd.EnsembleProblem(problem, seeds=range(2), axes={"learning_rate": [0.5, 1.0]})
    ds = nd.solve(ens)
    assert ds.f.dims == ("seed", "learning_rate", "time", "sample")
    sol = nd.solve(ens.member(seed=1, learning_rate=1.0))
    np.testing.assert_allclose(ds.f.sel(seed=1, learning_rate=1.0), sol.f, rtol=0, atol=1e-12)


def test_result_writes_to_netcdf(flow, tmp_path):
    ds = nd.solve(nd.EnsembleProblem(flow, seeds=range(2), widths=[8], output=kernel))
    path = nd.write_netcdf(ds, tmp_path / "ensemble.nc")
    back = nd.read_netcdf(path)
    xr.testing.assert_identical(back.drop_attrs(), ds.drop_attrs())
    assert back.attrs["master_seed"] == 0 and "config_sha256" in back.attrs


def test_nice_errors(flow):
    with pytest.raises(TypeError, match=r"seeds=8: pass a sequence of seeds, e\.g\. seeds=range\(8\)"):
        nd.EnsembleProblem(flow, seeds=8)
    with pytest.raises(ValueError, match=r"seeds repeats \[1\]"):
        nd.EnsembleProblem(flow, seeds=[1, 1, 2])
    with pytest.raises(ValueError, match=r"seeds contains -1: seeds must be integers in \[0, 2\*\*32\)"):
        nd.EnsembleProblem(flow, seeds=[-1])
    with pytest.raises(ValueError, match="axes\\['widht'\\].*no field or network hyperparameter"):
        nd.EnsembleProblem(flow, axes={"widht": [8]})
    with pytest.raises(ValueError, match="seeds are swept with seeds="):
        nd.EnsembleProblem(flow, axes={"seed": [1, 2]})
    with pytest.raises(ValueError, match=r"axes\['width'\]\[1\]=0 is not a valid width"):
        nd.EnsembleProblem(flow, widths=[8, 0])
    with pytest.raises(ValueError, match="'width' is given twice"):
        nd.EnsembleProblem(flow, widths=[8], axes={"width": [16]})
    with pytest.raises(ValueError, match="repeated labels"):
        nd.EnsembleProblem(flow, axes={"activation": ["tanh", nd.Tanh()]})
    with pytest.raises(TypeError, match="cannot label a coordinate.*Name the values with a dict"):
        nd.EnsembleProblem(flow, axes={"tspan": [(0.0, 1.0), (0.0, 2.0)]})
    with pytest.raises(ValueError, match="'time' is a dimension of the results"):
        nd.EnsembleProblem(flow, axes={"time": [1.0]})
    ens = nd.EnsembleProblem(flow, seeds=range(2), output=kernel)
    with pytest.raises(TypeError, match="has an output function.*drop the solver"):
        nd.solve(ens, nd.Tsit5())
    with pytest.raises(ValueError, match="batch_size=0: pass 'auto' or an integer >= 1"):
        nd.solve(ens, batch_size=0)
    with pytest.raises(TypeError, match="executor='dask': pass nthdyn.InProcess"):
        nd.solve(ens, executor="dask")
    with pytest.raises(TypeError, match="store=3: pass a folder path"):
        nd.solve(ens, store=3)
    with pytest.raises(ValueError, match="rtol=-1.0"):
        nd.solve(nd.EnsembleProblem(flow, seeds=range(2)), rtol=-1.0)
    with pytest.raises(TypeError, match="unknown options \\['tol'\\]"):
        nd.solve(nd.EnsembleProblem(flow, seeds=range(2)), tol=1e-3)
    with pytest.raises(ValueError, match=r"member\(width=9\): not on the axis"):
        nd.EnsembleProblem(flow, seeds=range(2), widths=[8]).member(seed=0, width=9)

    def returns_dataset(problem):
        return xr.Dataset({"a": 1.0})

    ds = nd.solve(nd.EnsembleProblem(flow, seeds=range(2), output=returns_dataset),
                  keep_failures=True)
    assert (ds.retcode == 4).all()
    assert "pass vmap=False" in str(ds.message.values[0])
