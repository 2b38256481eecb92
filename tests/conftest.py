"""Shared test set-up: float64 on, a key fixture, tiny problems.

The suite is compile-bound (tiny problems, many programs), so XLA's backend
optimizations are off here, before JAX's first computation (see
`nthdyn._case.compile_for_speed`; child processes inherit it).
"""

from nthdyn._case import compile_for_speed

compile_for_speed()

import jax  # noqa: E402
import pytest

jax.config.update("jax_enable_x64", True)

import nthdyn as nd  # noqa: E402
from _models import FLOW_TIMES  # noqa: E402


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def small_data():
    """6 points on the unit sphere in R^3 with N(0, 1) labels."""
    return nd.sphere_data(n=6, d=3, key=jax.random.key(11))


# One exact gradient-flow solve shared by test_flow.py and test_io.py (a diffrax
# solve compiles for several seconds; the session fixture compiles it once).
@pytest.fixture(scope="session")
def flow_problem():
    """Width 8, depth 2, tanh; n = 4 training points and 3 test points in R^3."""
    data = nd.sphere_data(n=4, d=3, key=jax.random.key(2))
    test = nd.sphere_data(n=3, d=3, key=jax.random.key(4)).X
    net = nd.MLP(in_size=3, width=8, depth=2, activation="tanh", key=jax.random.key(3))
    return nd.GradientFlowProblem(net, data, tspan=(0.0, 1.0), test=test)


@pytest.fixture(scope="session")
def flow_solution(flow_problem):
    """The flow of `flow_problem` by Dopri8 at rtol = atol = 1e-12, saved with its NTK."""
    return nd.solve(flow_problem, nd.Dopri8(), saveat=FLOW_TIMES, rtol=1e-12, atol=1e-12,
                    save_ntk=True)
