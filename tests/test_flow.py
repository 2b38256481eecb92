"""Gradient flow (Huang & Yau eq. 3-6) and gradient descent: against scipy, the
NTK equation of motion, monotone loss, a linear model, interpolation, remake."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax.flatten_util import ravel_pytree
from scipy.integrate import solve_ivp

import nthdyn as nd
from _models import FLOW_TIMES, features, linear_model, sphere

H = FLOW_TIMES[1] - FLOW_TIMES[0]  # 0.01, the save spacing of `flow_solution`


def _residual(solution):
    return np.asarray(solution.f) - np.asarray(solution.y)


def _ntk_velocity(solution):
    """-1/n K2(t) (f(t) - y): the right-hand side of eq. (6) on the training set."""
    K = np.asarray(solution.ntk)
    return -np.einsum("tab,tb->ta", K, _residual(solution)) / solution.problem.data.n


def test_saved_times_and_shapes(flow_solution):
    sol = flow_solution
    assert np.array_equal(np.asarray(sol.t), FLOW_TIMES)
    assert sol.f.shape == sol.dfdt.shape == (101, 4)
    assert sol.ntk.shape == (101, 4, 4) and sol.loss.shape == (101,)
    assert sol.f_test.shape == sol.dfdt_test.shape == (101, 3)
    assert sol.retcode == 0 and sol.status == "successful"
    assert sol.solver == "Dopri8" and sol.stats["num_accepted_steps"] >= 100
    assert sol.f.dtype == jnp.float64


def test_flow_matches_scipy_dop853(flow_problem, flow_solution):
    """(a) the same parameter ODE d theta/dt = -grad L (eq. 3), integrated by scipy."""
    net, data = flow_problem.network, flow_problem.data
    params, static = eqx.partition(net, eqx.is_inexact_array)
    theta0, unravel = ravel_pytree(params)
    X, y = np.asarray(data.X), np.asarray(data.y)

    def outputs(theta):
        return eqx.combine(unravel(theta), static)(X)

    def loss(theta):
        return 0.5 * jnp.mean((outputs(theta) - y) ** 2)

    gradient = jax.jit(jax.grad(loss))
    reference = solve_ivp(lambda t, theta: -np.asarray(gradient(theta)), (0.0, 1.0),
                          np.asarray(theta0), method="DOP853", rtol=1e-12, atol=1e-12,
                          t_eval=FLOW_TIMES)
    assert reference.success
    f_reference = np.asarray(jax.jit(jax.vmap(outputs))(reference.y.T))
    f = np.asarray(flow_solution.f)
    assert np.max(np.abs(f - f_reference)) <= 1e-8
    # the outputs moved far more than the tolerance: the comparison has teeth
    assert np.max(np.abs(f[-1] - f[0])) > 1e-2


def test_ntk_equation_of_motion_eq_6(flow_solution):
    """(b) d/dt f = -1/n K2 (f - y) along the exact flow: a five-point central
    difference of the saved outputs against the saved NTK."""
    f = np.asarray(flow_solution.f)
    derivative = (f[:-4] - 8 * f[1:-3] + 8 * f[3:-1] - f[4:]) / (12 * H)
    velocity = _ntk_velocity(flow_solution)
    assert np.max(np.abs(velocity)) > 0.1
    assert np.max(np.abs(derivative - velocity[2:-2])) <= 1e-8


def test_saved_dfdt_is_ntk_velocity(flow_solution):
    velocity = _ntk_velocity(flow_solution)
    dfdt = np.asarray(flow_solution.dfdt)
    assert np.max(np.abs(dfdt - velocity)) <= 1e-12 * np.max(np.abs(velocity))


def test_loss_never_increases(flow_solution):
    """(c) dL/dt = -|grad L|^2 <= 0."""
    loss = np.asarray(flow_solution.loss)
    np.testing.assert_allclose(loss, 0.5 * np.mean(_residual(flow_solution) ** 2, axis=1),
                               rtol=1e-14)
    assert np.all(np.diff(loss) <= 1e-14 * loss[:-1])
    assert loss[-1] < 0.9 * loss[0]


def test_ntk_moves_for_a_finite_width_network(flow_solution):
    """The NTK of the width-8 network changes along training (Huang & Yau, Section 1.2)."""
    K = np.asarray(flow_solution.ntk)
    assert np.max(np.abs(K[-1] - K[0])) > 1e-3 * np.max(np.abs(K[0]))
    K0 = nd.ntk(flow_solution.problem.network, flow_solution.problem.data.X)
    assert np.max(np.abs(K[0] - np.asarray(K0))) <= 1e-13 * np.max(np.abs(K0))


def test_linear_model_has_constant_ntk_and_exponential_flow():
    """(d) for f = w . phi(x) the NTK is phi phi^T at all times, and eq. (6) is
    linear: f(t) = y + exp(-t K / n) (f(0) - y)."""
    X = sphere(4, 3, 7)
    y = np.array([0.5, -1.0, 0.25, 1.5])
    net = linear_model()
    problem = nd.GradientFlowProblem(net, (X, y), tspan=(0.0, 2.0))
    times = np.linspace(0.0, 2.0, 11)
    sol = nd.solve(problem, nd.Dopri8(), saveat=times, rtol=1e-12, atol=1e-12, save_ntk=True)
    K = np.asarray(sol.ntk)
    Phi = np.stack([features(x, np) for x in X])
    np.testing.assert_allclose(K[0], Phi @ Phi.T, rtol=1e-13, atol=0)
    assert np.max(np.abs(K - K[0])) <= 1e-12 * np.max(np.abs(K[0]))
    f0 = np.asarray(net(X))
    exact = np.stack([y + scipy.linalg.expm(-t * K[0] / 4) @ (f0 - y) for t in times])
    assert np.max(np.abs(np.asarray(sol.f) - exact)) <= 1e-9
    assert np.max(np.abs(exact[-1] - exact[0])) > 0.1


def test_gradient_descent_approaches_flow_linearly_in_learning_rate(flow_problem, flow_solution):
    """(e) gradient descent with step eta for N steps tracks the flow at t = eta N
    with an O(eta) error."""
    f_flow = np.asarray(flow_solution.f[-1])  # t = 1
    errors = []
    for eta in (0.02, 0.01, 0.005):
        steps = round(1.0 / eta)
        problem = nd.GradientDescentProblem(flow_problem.network, flow_problem.data, steps, eta)
        sol = nd.solve(problem, saveat=[0, steps])
        assert np.array_equal(np.asarray(sol.t), [0.0, steps]) and sol.dfdt is None
        np.testing.assert_allclose(sol.f[0], flow_solution.f[0], rtol=1e-14)
        errors.append(np.max(np.abs(np.asarray(sol.f[-1]) - f_flow)))
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all((1.6 < ratios) & (ratios < 2.4)), (errors, ratios)


def test_gradient_descent_single_step_by_hand(flow_problem):
    """One step theta_1 = theta_0 - eta grad L(theta_0), written out with ravel_pytree."""
    net, data = flow_problem.network, flow_problem.data
    params, static = eqx.partition(net, eqx.is_inexact_array)
    theta0, unravel = ravel_pytree(params)

    def loss(theta):
        return 0.5 * jnp.mean((eqx.combine(unravel(theta), static)(data.X) - data.y) ** 2)

    theta1 = theta0 - 0.02 * jax.jit(jax.grad(loss))(theta0)
    expected = eqx.combine(unravel(theta1), static)(data.X)
    sol = nd.solve(nd.GradientDescentProblem(net, data, 1, 0.02))
    assert sol.f.shape == (2, 4)
    np.testing.assert_allclose(sol.f[1], expected, rtol=1e-13)
    np.testing.assert_allclose(sol.loss[1], loss(theta1), rtol=1e-13)


def _subsampled(solution, stride):
    return eqx.tree_at(lambda s: (s.t, s.f, s.dfdt), solution,
                       (solution.t[::stride], solution.f[::stride], solution.dfdt[::stride]))


def test_hermite_interpolation_is_fourth_order(flow_solution):
    """(f) sol(t) from saves every `stride * 0.01` against the saves every 0.01:
    the error scales like (save spacing)^4."""
    f = np.asarray(flow_solution.f)
    errors = {}
    for stride in (20, 10):
        coarse = _subsampled(flow_solution, stride)
        between = np.arange(101) % stride != 0
        interpolated = coarse(FLOW_TIMES[between])
        assert interpolated.shape == (between.sum(), 4)
        errors[stride] = np.max(np.abs(interpolated - f[between]))
        # bounded by C h^4 with a constant fixed by the derivatives of f (~ 1e-3 here)
        assert errors[stride] <= 2e-3 * (stride * H) ** 4
    assert 11 < errors[20] / errors[10] < 22
    # at saved times the interpolant returns the saved values
    np.testing.assert_array_equal(flow_solution(FLOW_TIMES[37]), f[37])
    np.testing.assert_array_equal(flow_solution(FLOW_TIMES[[0, 100]]), f[[0, 100]])
    # the test outputs are interpolated too
    coarse = _subsampled(flow_solution, 10)
    coarse = eqx.tree_at(lambda s: (s.f_test, s.dfdt_test), coarse,
                         (flow_solution.f_test[::10], flow_solution.dfdt_test[::10]))
    assert np.max(np.abs(coarse.evaluate(FLOW_TIMES[55], "f_test")
                         - np.asarray(flow_solution.f_test[55]))) <= 2e-3 * (10 * H) ** 4


def test_interpolation_outside_span_raises(flow_solution):
    with pytest.raises(ValueError, match=r"t=1\.5 is outside the saved span"):
        flow_solution(1.5)


def test_final_network_reproduces_last_outputs(flow_problem, flow_solution):
    """(g) the returned network is the network at t1."""
    final = flow_solution.network
    X = flow_problem.data.X
    np.testing.assert_allclose(final(X), flow_solution.f[-1], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(final(flow_problem.test), flow_solution.f_test[-1],
                               rtol=1e-13, atol=1e-15)
    assert not np.allclose(final.readout, flow_problem.network.readout)


def test_remake_problem(flow_problem):
    """(h) width and tspan change; data, test, key and other hyperparameters stay."""
    wider = nd.remake(flow_problem, width=16, tspan=(0.0, 2.0))
    assert isinstance(wider, nd.GradientFlowProblem)
    assert wider.tspan == (0.0, 2.0) and flow_problem.tspan == (0.0, 1.0)
    assert wider.network.width == 16 and flow_problem.network.width == 8
    assert [w.shape for w in wider.network.weights] == [(16, 3), (16, 16)]
    assert (wider.network.depth, type(wider.network.activation)) == (2, nd.Tanh)
    assert np.array_equal(jax.random.key_data(wider.network.key),
                          jax.random.key_data(flow_problem.network.key))
    assert wider.data is flow_problem.data
    assert np.array_equal(wider.test, flow_problem.test)
    assert wider.config()["network"]["width"] == 16
    # only the time span: the network is the very same
    later = nd.remake(flow_problem, tspan=(0.0, 3.0))
    assert later.network is flow_problem.network and later.tspan == (0.0, 3.0)
    # gradient descent: its own fields
    descent = nd.GradientDescentProblem(flow_problem.network, flow_problem.data, 10, 0.1)
    changed = nd.remake(descent, learning_rate=0.05, steps=20, depth=1)
    assert (changed.learning_rate, changed.steps, changed.network.depth) == (0.05, 20, 1)
    assert (descent.learning_rate, descent.steps) == (0.1, 10)


def test_test_points_at_start(flow_problem, flow_solution):
    """(i) f_test(0) = f(X_test) of the initial network, and its derivative follows
    eq. (6) with the cross kernel K2(X_test, X)."""
    net, data = flow_problem.network, flow_problem.data
    np.testing.assert_allclose(flow_solution.f_test[0], net(flow_problem.test),
                               rtol=1e-14, atol=1e-15)
    K_cross = np.asarray(nd.ntk(net, flow_problem.test, data.X))
    expected = -K_cross @ (np.asarray(net(data.X)) - np.asarray(data.y)) / data.n
    np.testing.assert_allclose(flow_solution.dfdt_test[0], expected, rtol=1e-12, atol=1e-14)


@pytest.fixture
def float32_mode():
    jax.config.update("jax_enable_x64", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", True)


def test_float32_mode_warns(float32_mode, monkeypatch):
    # built inside the test: arrays made while x64 is off are float32
    data = nd.sphere_data(n=4, d=3, key=jax.random.key(0))
    net = nd.MLP(3, 8, 1, key=jax.random.key(1))
    assert net.readout.dtype == jnp.float32
    with pytest.warns(nd.Float64Warning, match="jax_enable_x64"):
        sol = nd.solve(nd.GradientDescentProblem(net, data, 2, 0.1))
    assert sol.f.dtype == jnp.float32
    # the flow warns before integrating (the integration itself is stubbed out
    # here: compiling a float32 diffrax solve would take seconds)

    def integrate(*args, **kwargs):
        raise RuntimeError("integration reached")

    monkeypatch.setattr("nthdyn._solve._core._integrate", integrate)
    with pytest.warns(nd.Float64Warning, match="float32"):
        with pytest.raises(RuntimeError, match="integration reached"):
            nd.solve(nd.GradientFlowProblem(net, data, (0.0, 0.1)), saveat=[0.0, 0.1])


def test_float64_restored_after_float32_test():
    assert jax.config.jax_enable_x64
    assert jnp.zeros(1).dtype == jnp.float64
