"""The gradient flow with factored Runge-Kutta stages equals the dense flow: the same
tableau and controller take the same steps, so the saved values agree to rounding."""

import equinox as eqx
import jax
import numpy as np
import pytest

import nthdyn as nd
from nthdyn._problems._factored import factoring_pays

TIMES = np.linspace(0.0, 2.0, 5)


def _both(problem, solver, **options):
    dense = nd.solve(problem, solver, saveat=TIMES, factored=False, **options)
    factored = nd.solve(problem, solver, saveat=TIMES, factored=True, **options)
    assert factored.options["factored"] and not dense.options["factored"]
    return dense, factored


@pytest.mark.parametrize("network, solver, options", [
    (nd.MLP(3, 10, 3, "tanh", key=3, frozen=(3,)), nd.Dopri8(), {}),
    (nd.MLP(3, 12, 2, "softplus", key=2, frozen=(0,)), nd.Tsit5(), {}),
    (nd.JacotMLP(3, 10, 2, "erf", key=4), nd.Tsit5(), {}),
    (nd.MLP(3, 12, 2, "tanh", key=5), nd.Tsit5(), dict(center=True, time_scale=(0.5, 2.0, 1.5))),
], ids=["MLP-H3-readout-frozen-Dopri8", "MLP-H2-first-frozen-Tsit5", "Jacot-H2-Tsit5",
        "centered-time-scales-Tsit5"])
def test_factored_flow_equals_the_dense_flow(network, solver, options):
    data = nd.sphere_data(n=4, d=3, key=jax.random.key(0))
    test = nd.sphere_data(n=2, d=3, key=jax.random.key(5)).X
    problem = nd.GradientFlowProblem(network, data, (0.0, 2.0), test=test, **options)
    dense, factored = _both(problem, solver, rtol=1e-12, atol=1e-12, save_ntk=True)
    assert int(factored.stats["num_steps"]) == int(dense.stats["num_steps"])
    for name in ("f", "dfdt", "f_test", "ntk", "loss"):
        np.testing.assert_allclose(getattr(factored, name), getattr(dense, name), rtol=0,
                                   atol=1e-13, err_msg=name)
    assert float(np.abs(dense.f[-1] - dense.f[0]).max()) > 1e-2  # the flow moved
    arrays = lambda net: jax.tree_util.tree_leaves(eqx.filter(net, eqx.is_inexact_array))  # noqa: E731
    for a, b in zip(arrays(factored.network), arrays(dense.network), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)


def test_the_automatic_rule_factors_wide_hidden_matrices_only():
    # Dopri8 has 14 stages: with n = 6 a step appends 84 columns per matrix
    wide, narrow = nd.MLP(8, 4 * 84, 2, key=0), nd.MLP(8, 4 * 84 - 1, 2, key=0)
    assert factoring_pays(wide, 6, nd.Dopri8())
    assert not factoring_pays(narrow, 6, nd.Dopri8())
    assert not factoring_pays(nd.MLP(8, 4096, 1, key=0), 6, nd.Dopri8())  # W1 is m x 8
    assert not factoring_pays(wide, 6, nd.Kvaerno5())  # implicit: dense
    frozen = nd.MLP(8, 4 * 84, 2, key=0, frozen=(1,))  # the wide matrix is not trained
    assert not factoring_pays(frozen, 6, nd.Dopri8())
