"""The one solve core: every problem type under jit and vmap equals a loop of single
solves; the status is data (RESULTS) per member; precomputed hierarchy kernels;
ensembles of any problem type; option names and errors shared by every problem."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest

import nthdyn as nd

TIMES = np.linspace(0.0, 1.0, 5)
KEYS = jax.random.split(jax.random.key(5), 3)


@pytest.fixture(scope="module")
def data():
    return nd.sphere_data(n=5, d=3, key=jax.random.key(11))


def networks(keys, activation="tanh"):
    return eqx.filter_vmap(lambda k: nd.MLP(3, 12, 2, activation, key=k))(keys)


def build(kind, net, data):
    if kind == "flow":
        return nd.GradientFlowProblem(net, data, (0.0, 1.0), test=data.X[:2] * 0.5)
    if kind == "descent":
        return nd.GradientDescentProblem(net, data, steps=4, learning_rate=0.5)
    if kind == "nth":
        return nd.NTHProblem(net, data, 3, (0.0, 1.0), test=data.X[:2] * 0.5)
    if kind == "nth4":
        return nd.NTHProblem(net, data, 4, (0.0, 1.0))
    if kind == "regression":
        return nd.KernelRegressionProblem(nd.FiniteNTK(net), data, (0.0, 1.0))
    if kind == "regression_ode":
        return nd.KernelRegressionProblem(nd.FiniteNTK(net), data, (0.0, 1.0))
    raise AssertionError(kind)


def method(kind):
    return {"flow": nd.Tsit5(), "descent": None, "nth": nd.Tsit5(), "nth4": nd.Tsit5(),
            "regression": None, "regression_ode": nd.Tsit5()}[kind]


def options(kind):
    return {} if kind == "descent" else {"saveat": TIMES}


@pytest.mark.parametrize("kind", ["flow", "descent", "nth", "nth4", "regression", "regression_ode"])
def test_jit_and_vmap_equal_a_loop_of_single_solves(kind, data):
    @eqx.filter_jit
    def batched(nets):
        return eqx.filter_vmap(
            lambda net: nd.solve(build(kind, net, data), method(kind), **options(kind)))(nets)

    solutions = batched(networks(KEYS))
    assert solutions.f.shape[0] == 3 and (solutions.retcode == 0).all()
    for i, key in enumerate(KEYS):
        single = nd.solve(build(kind, nd.MLP(3, 12, 2, key=key), data), method(kind),
                          **options(kind))
        assert single.status == "successful"
        for name in ("f", "dfdt", "loss", "ntk", "f_test"):
            ours, theirs = getattr(solutions, name), getattr(single, name)
            assert (ours is None) == (theirs is None), name
            if ours is not None:
                np.testing.assert_allclose(ours[i], theirs, rtol=0, atol=1e-12, err_msg=name)


def test_status_is_data_under_vmap(data):
    """One member hits max_steps, one becomes non-finite, one succeeds: each gets
    its own RESULTS member; nothing is raised with throw=False."""
    nets = networks(KEYS)
    scale = jnp.asarray([1.0, 1.0, jnp.nan])  # the third network has NaN weights
    nets = eqx.tree_at(lambda n: n.readout, nets, nets.readout * scale[:, None])
    max_steps = jnp.asarray([1000, 2, 1000])

    def one(net, steps):  # max_steps is static: two solves, selected per member
        few = nd.solve(nd.GradientFlowProblem(net, data, (0.0, 1.0)), nd.Tsit5(),
                       saveat=TIMES, max_steps=2, throw=False)
        many = nd.solve(nd.GradientFlowProblem(net, data, (0.0, 1.0)), nd.Tsit5(),
                        saveat=TIMES, throw=False)
        return nd.RESULTS.where(steps == 2, few.result, many.result)

    results = eqx.filter_jit(eqx.filter_vmap(one))(nets, max_steps)
    codes = np.asarray(results._value).tolist()
    assert codes == [0, 1, 2]
    assert [nd.RETCODES[c] for c in codes] == ["successful", "max_steps_reached", "nonfinite"]


def test_throw_inside_jit_raises_with_the_status_message(data):
    net = nd.MLP(3, 12, 2, key=0)

    @eqx.filter_jit
    def run(net):
        return nd.solve(nd.GradientFlowProblem(net, data, (0.0, 1.0)), nd.Tsit5(),
                        saveat=TIMES, max_steps=2).f

    with pytest.raises(Exception, match="raise `max_steps`"):
        run(net)


def test_throw_on_the_host_names_the_option(data):
    net = nd.MLP(3, 12, 2, key=0)
    with pytest.raises(nd.SolverError, match=r"max_steps_reached: max_steps=3 steps .*raise max_steps"):
        nd.solve(nd.NTHProblem(net, data, 3, (0.0, 1.0)), nd.Tsit5(), max_steps=3)
    sol = nd.solve(nd.NTHProblem(net, data, 3, (0.0, 1.0)), nd.Tsit5(), max_steps=3, throw=False)
    assert sol.result == nd.RESULTS.max_steps_reached and sol.status == "max_steps_reached"


def test_precomputed_kernels_give_the_same_hierarchy(data):
    net = nd.MLP(3, 12, 2, key=3)
    test = data.X[:2] * 0.5
    kernels = nd.initial_kernels(nd.NTHProblem(net, data, 4, (0.0, 1.0), test=test))
    assert kernels.order == 4
    for order in (2, 3, 4):
        problem = nd.NTHProblem(net, data, order, (0.0, 1.0), test=test)
        fresh = nd.solve(problem, nd.Tsit5(), saveat=TIMES)
        shared = nd.solve(problem, nd.Tsit5(), saveat=TIMES, kernels=kernels)
        np.testing.assert_array_equal(shared.f, fresh.f)
        np.testing.assert_array_equal(shared.f_test, fresh.f_test)
        np.testing.assert_array_equal(shared.ntk, fresh.ntk)
    with pytest.raises(ValueError, match="go up to order 3; the problem needs order 4"):
        low = nd.initial_kernels(nd.NTHProblem(net, data, 3, (0.0, 1.0), test=test))
        nd.solve(nd.NTHProblem(net, data, 4, (0.0, 1.0), test=test), kernels=low)
    with pytest.raises(ValueError, match="computed with test points"):
        nd.solve(nd.NTHProblem(net, data, 3, (0.0, 1.0)), kernels=kernels)
    with pytest.raises(TypeError, match="pass the result of nthdyn.initial_kernels"):
        nd.solve(nd.NTHProblem(net, data, 3, (0.0, 1.0)), kernels=[1.0])


def test_the_same_options_everywhere(data):
    net = nd.MLP(3, 12, 2, key=0)
    flow = nd.GradientFlowProblem(net, data, (0.0, 1.0))
    with pytest.raises(TypeError, match=r"unknown options \['reltol'\]; the options are "
                                        r"\['saveat', 'rtol', 'atol', 'norm', 'max_steps'"):
        nd.solve(flow, reltol=1e-3)
    descent = nd.GradientDescentProblem(net, data, 3, 0.1)
    with pytest.raises(TypeError, match=r"got \['rtol'\]: these control an ODE solver"):
        nd.solve(descent, rtol=1e-3)
    with pytest.raises(TypeError, match="norm=3: pass a function"):
        nd.solve(flow, norm=3)
    # the norm is settable: the max norm is looser than the 2-norm, so it takes fewer steps
    two = nd.solve(flow, saveat=TIMES, rtol=1e-8, atol=1e-8)
    most = nd.solve(flow, saveat=TIMES, rtol=1e-8, atol=1e-8, norm=optx.max_norm)
    assert two.options["norm"] == "two_norm" and most.options["norm"] == "max_norm"
    assert int(most.stats["num_steps"]) <= int(two.stats["num_steps"])
    np.testing.assert_allclose(most.f, two.f, rtol=0, atol=1e-6)


def test_kernel_regression_from_a_pair_and_as_a_problem(data):
    net = nd.MLP(3, 12, 2, key=0)
    pair = nd.KernelRegressionProblem(nd.FiniteNTK(net), (data.X, data.y), (0.0, 1.0),
                                      test=data.X[:2] * 0.5)
    assert isinstance(pair, nd.AbstractProblem) and pair.network is net
    sol = nd.solve(pair, saveat=TIMES)
    reference = nd.solve(nd.KernelRegressionProblem(nd.FiniteNTK(net), data, (0.0, 1.0),
                                                    test=data.X[:2] * 0.5), saveat=TIMES)
    np.testing.assert_array_equal(sol.f, reference.f)
    wider = nd.remake(pair, width=20, key=1)  # remake reaches the kernel's network
    assert wider.network.width == 20
    np.testing.assert_allclose(nd.solve(wider, saveat=[0.0]).f[0], wider.network(data.X),
                               rtol=0, atol=1e-14)  # f0 follows the new network


@pytest.mark.parametrize("kind", ["nth", "descent", "regression"])
def test_ensembles_of_any_problem_over_seeds(kind, data):
    problem = build(kind, nd.MLP(3, 12, 2, key=0), data)
    ens = nd.EnsembleProblem(problem, seeds=range(3))
    ds = nd.solve(ens, method(kind), **options(kind))
    assert ds.f.dims[0] == "seed" and (ds.retcode == 0).all()
    for seed in range(3):
        member = nd.solve(ens.member(seed=seed), method(kind), **options(kind))
        np.testing.assert_allclose(ds.f.sel(seed=seed), member.f, rtol=0, atol=1e-12)
        np.testing.assert_allclose(ds.loss.sel(seed=seed), member.loss, rtol=0, atol=1e-12)


def test_hierarchy_files_are_labelled_as_the_hierarchy(data):
    sol = nd.solve(build("nth", nd.MLP(3, 12, 2, key=0), data), nd.Tsit5(), saveat=TIMES)
    ds = nd.to_dataset(sol)
    assert "K~2" in ds.ntk.attrs["long_name"] and "eq. (15)" in ds.ntk.attrs["equation"]
    assert "truncated NTH" in ds.attrs["title"]
    assert "gradient flow" not in ds.attrs["title"]


def test_a_sweep_over_orders_computes_the_kernels_once(data, monkeypatch):
    from nthdyn._ensemble import _computation

    calls = []
    original = _computation._batched_kernels

    def counting(problem, keys, order, max_bytes):
        calls.append(order)
        return original(problem, keys, order, max_bytes)

    monkeypatch.setattr(_computation, "_batched_kernels", counting)
    problem = nd.NTHProblem(nd.MLP(3, 12, 2, key=0), data, 2, (0.0, 1.0))
    ens = nd.EnsembleProblem(problem, seeds=range(2), orders=[2, 3, 4])
    ds = nd.solve(ens, nd.Tsit5(), saveat=TIMES)
    assert calls == [4]  # once, at the largest order, for all three orders
    for order in (2, 3, 4):
        member = nd.solve(ens.member(seed=1, order=order), nd.Tsit5(), saveat=TIMES)
        np.testing.assert_allclose(ds.f.sel(seed=1, order=order), member.f, rtol=0, atol=1e-12)


def test_import_leaves_the_heavy_dependencies_for_later():
    """`import nthdyn` imports neither diffrax (with optimistix, lineax) nor xarray,
    pandas, matplotlib or dask (`nthdyn/_lazy.py`); the re-exported solvers are diffrax's,
    imported on first access, and a misspelt name is an AttributeError."""
    import subprocess
    import sys

    heavy = ("diffrax", "optimistix", "lineax", "xarray", "pandas", "matplotlib", "dask")
    script = (
        "import sys\nimport nthdyn as nd\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
        "from nthdyn import Dopri8\nimport diffrax\n"
        "assert Dopri8 is diffrax.Dopri8 and nd.SRA1 is diffrax.SRA1 and 'Tsit5' in dir(nd)\n"
        "try:\n    nd.Tsit6\nexcept AttributeError as error:\n    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["[]", "module 'nthdyn' has no attribute 'Tsit6'"], out
