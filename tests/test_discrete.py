"""Discrete gradient descent: the Taylor kernels of eq. (29), the truncated discrete
hierarchy, the stability edge and the phase of a run.

Compile-bound: one network and one training set serve the kernel, hierarchy and Lanczos
tests (module-scoped fixtures, one compiled program per kernel), the plain-JAX references
are jitted once, and results are compared in NumPy."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nthdyn as nd
from nthdyn._network import trainable

N = 6
#: Every hierarchy and descent run on the `setup` network takes this many steps and saves
#: each one, so one compiled map per order (and one for gradient descent) serves all tests.
STEPS = 20


@pytest.fixture(scope="module")
def setup():
    """A two-layer tanh network on N points, its parameters, the gradients `G` of its N
    outputs (stacked), `K2(params)` in plain JAX (the Jacobian product) and
    `K2_at(steps)`: K2 at `params + sum_b steps[b] G[b]` (directions fixed; jitted, in NumPy)."""
    data = nd.sphere_data(n=N, d=3, key=jax.random.key(1))
    net = nd.MLP(3, 8, 1, "tanh", key=2)
    params, static = trainable(net)
    G = jax.jit(jax.vmap(jax.grad(lambda p, x: eqx.combine(p, static).apply(x)), (None, 0)))(
        params, data.X)
    K2 = jax.jit(lambda p: nd.ntk_jacobian(eqx.combine(p, static), data.X))
    K2_shifted = jax.jit(lambda steps: K2(_shift(params, G, steps)))
    return data, net, params, static, G, K2, lambda steps: np.asarray(K2_shifted(steps))


@pytest.fixture(scope="module")
def kernels(setup):
    """`initial_discrete_kernels` of order 4 (K2, K3, K4, calK4, F4: one program)."""
    data, net = setup[:2]
    return nd.initial_discrete_kernels(nd.DiscreteNTHProblem(net, data, 4, 0.1, 1))


@pytest.fixture(scope="module")
def arrays(kernels):
    """The same kernels as NumPy arrays."""
    return {"f": np.asarray(kernels.f), "K2": np.asarray(kernels.K[0]),
            "K3": np.asarray(kernels.K[1]), "K4": np.asarray(kernels.K[2]),
            "calK4": np.asarray(kernels.calK4), "F4": np.asarray(kernels.F4)}


def _shift(params, G, steps):
    """`params + sum_b steps[b] grad f_b(params)`."""
    return jax.tree_util.tree_map(lambda p, g: p + jnp.tensordot(steps, g, 1), params, G)


def test_taylor_kernels_are_derivatives_along_fixed_directions(setup, arrays):
    data, net, *_, K2_at = setup
    calK3, calK4 = np.asarray(nd.taylor_kernel(net, data.X, 3)), arrays["calK4"]
    h, e = 1e-4, np.eye(N)
    for c in range(N):  # central differences of K2(theta + h v_c), v_c = grad f_c(theta_0)
        fd3 = (K2_at(h * e[c]) - K2_at(-h * e[c])) / (2 * h)
        np.testing.assert_allclose(calK3[..., c], fd3, atol=1e-7)
        for b in range(N):
            fd4 = sum(s * t * K2_at(s * h * e[c] + t * h * e[b])
                      for s in (1, -1) for t in (1, -1)) / (4 * h * h)
            np.testing.assert_allclose(calK4[..., c, b], fd4, atol=1e-6)
    assert np.abs(calK4).max() > 1e-2  # the check is not vacuous


def test_calK3_is_K3_and_K4_minus_calK4_is_the_hessian_term(setup, arrays):
    data, net, params, static, G, K2, _ = setup
    K3, K4, calK4 = arrays["K3"], arrays["K4"], arrays["calK4"]
    np.testing.assert_allclose(nd.taylor_kernel(net, data.X, 3), K3, rtol=0, atol=1e-13)

    # <grad K2(a1, a2), Hess f_c grad f_e> in plain JAX: a Hessian-vector product, then a jvp
    @jax.jit
    def hessian_term(params, G):
        def one(x_c, g_e):
            grad_c = jax.grad(lambda p: eqx.combine(p, static).apply(x_c))
            hvp = jax.jvp(grad_c, (params,), (g_e,))[1]
            return jax.jvp(K2, (params,), (hvp,))[1]

        by_e_c = jax.vmap(lambda g_e: jax.vmap(lambda x_c: one(x_c, g_e))(data.X))(G)
        return jnp.transpose(by_e_c, (2, 3, 1, 0))  # (a1, a2, c, e)

    expected = np.asarray(hessian_term(params, G))
    np.testing.assert_allclose(K4 - calK4, expected, rtol=0, atol=1e-12)
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(calK4, np.swapaxes(calK4, 2, 3), atol=1e-13)  # calK(4) symmetric
    assert np.abs(K4 - np.swapaxes(K4, 2, 3)).max() > 1e-3  # K(4) is not


def test_contractions_bases_and_output_kernels(setup, arrays):
    data, net, *_ = setup
    c3, c4 = np.array([0.3, -1.0, 0.5, 0.8, 0.1, -0.2]), np.array([1.0, 0.2, -0.7, -0.4, 0.6, 0.3])
    np.testing.assert_allclose(nd.taylor_contraction(net, data.X, [c3, c4]),
                               arrays["calK4"] @ c4 @ c3, atol=1e-13)
    X1 = data.X[:2] * 0.5  # test points in the first slot; the plain-JAX Jacobian base
    np.testing.assert_allclose(nd.taylor_kernel(net, data.X, 3, X_first=X1, method="jacobian"),
                               nd.hierarchy_kernel(net, data.X, 3, X_first=X1), atol=1e-13)
    np.testing.assert_allclose(nd.output_taylor_kernel(net, data.X, 2), arrays["K2"], atol=1e-13)
    np.testing.assert_allclose(nd.output_taylor_kernel(net, data.X, 3),
                               nd.symmetrized_output_kernel(arrays["K3"]), atol=1e-13)


def test_output_update_expansion(setup, arrays):
    """f(theta - eta/n J^T r) = sum_j eta^j c_j + O(eta^(order+1)), with c_j the output kernels."""
    data, net, params, static, G, *_ = setup
    r = np.asarray(data.y) - arrays["f"]
    coefficients = np.asarray(nd.output_update(net, data.X, r, 3))
    F = [np.asarray(nd.output_taylor_kernel(net, data.X, j)) for j in (2, 3)] + [arrays["F4"]]
    for j in (1, 2, 3):
        contracted = F[j - 1]
        for _ in range(j):
            contracted = contracted @ r
        np.testing.assert_allclose(coefficients[j], contracted * (-1 / N) ** j / np.prod(range(1, j + 1)),
                                   atol=1e-12)
    f_after = jax.jit(lambda eta: eqx.combine(_shift(params, G, -eta / N * r), static)(data.X))
    for order in (1, 2, 3):
        errors = []
        for eta in (0.2, 0.1):
            series = sum(eta**j * coefficients[j] for j in range(order + 1))
            errors.append(np.abs(f_after(eta) - series).max())
        assert 0.8 * 2 ** (order + 1) < errors[0] / errors[1] < 1.25 * 2 ** (order + 1)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_one_step_matches_gradient_descent_to_order_eta_s(setup, kernels, order):
    data, net = setup[:2]
    err_f, err_K = [], []
    for eta in (0.2, 0.1):  # the first step of each run
        gd = nd.solve(nd.GradientDescentProblem(net, data, STEPS, eta), save_ntk=True)
        dn = nd.solve(nd.DiscreteNTHProblem(net, data, order, eta, STEPS), kernels=kernels)
        err_f.append(np.abs(np.asarray(gd.f)[1] - np.asarray(dn.f)[1]).max())
        err_K.append(np.abs(np.asarray(gd.ntk)[1] - np.asarray(dn.ntk)[1]).max())
    # f is exact to eta^(s-1), K2 to eta^(s-2): halving eta divides the errors by 2^s, 2^(s-1)
    assert 0.85 * 2**order < err_f[0] / err_f[1] < 1.15 * 2**order
    assert 0.85 * 2 ** (order - 1) < err_K[0] / err_K[1] < 1.15 * 2 ** (order - 1)


def test_order_2_is_gradient_descent_with_the_frozen_ntk(setup, kernels, arrays):
    data, net = setup[:2]
    eta = 0.7
    sol = nd.solve(nd.DiscreteNTHProblem(net, data, 2, eta, STEPS), kernels=kernels)
    K2, r = arrays["K2"], arrays["f"] - np.asarray(data.y)
    for k in range(STEPS + 1):
        expected = np.linalg.matrix_power(np.eye(N) - eta / N * K2, k) @ r + np.asarray(data.y)
        np.testing.assert_allclose(np.asarray(sol.f)[k], expected, atol=1e-13)
    np.testing.assert_allclose(np.asarray(sol.ntk)[-1], K2, atol=0)


def test_kernels_of_order_4_serve_order_3(setup, kernels):
    data, net = setup[:2]
    problem = nd.DiscreteNTHProblem(net, data, 3, 0.3, STEPS)
    own_kernels = nd.initial_discrete_kernels(problem)
    served = kernels.truncate(3)
    assert own_kernels.order == served.order == 3 and served.calK4 is None
    for own, shared in zip(own_kernels.K, served.K, strict=True):
        np.testing.assert_allclose(own, shared, atol=1e-14)
    own = nd.solve(problem)
    shared = nd.solve(problem, kernels=kernels)
    np.testing.assert_allclose(own.f, shared.f, atol=1e-14)
    assert own.t.tolist() == list(range(STEPS + 1)) and own.dfdt is None and own.network is None


def test_small_steps_converge_to_the_continuous_hierarchy(setup, kernels):
    """eta -> 0 with t = eta k fixed: the order-4 map is the Euler scheme of eq. (15), O(eta)."""
    data, net = setup[:2]
    T = 1.0
    nth = nd.solve(nd.NTHProblem(net, data, 4, (0.0, T)), saveat=[T], rtol=1e-12, atol=1e-12,
                   kernels=nd.HierarchyKernels(kernels.f, kernels.K, None, None))
    errors = []
    for eta in (0.1, 0.05):  # t = T at step T / eta
        dn = nd.solve(nd.DiscreteNTHProblem(net, data, 4, eta, STEPS), kernels=kernels)
        errors.append(np.abs(np.asarray(nth.f)[-1] - np.asarray(dn.f)[round(T / eta)]).max())
    assert 1.8 < errors[0] / errors[1] < 2.2
    assert errors[1] < 1e-2


def test_lanczos_lambda_max_equals_dense_eigenvalue(setup):
    data, net, *_, K2_at = setup
    K = K2_at(np.zeros(N))  # the plain-JAX Jacobian product
    dense = np.linalg.eigvalsh(K)[-1]
    np.testing.assert_allclose(float(nd.ntk_lambda_max(net, data.X)), dense, rtol=1e-10)
    # fewer iterations than n: Ritz values, lower bounds that improve with each iteration
    v0 = np.random.default_rng(0).normal(size=N)
    ritz = jax.jit(lambda K: [nd.lanczos_max(lambda v: K @ v, v0, k) for k in (2, 5)])(K)
    gaps = [dense - float(value) for value in ritz]
    assert -1e-12 < gaps[1] < gaps[0] and gaps[1] < 1e-3 * dense


@pytest.mark.parametrize("loss, lam, phase", [
    (np.geomspace(1.0, 1e-3, 20), 1.0, "lazy"),
    (np.r_[1.0, 1.05, 0.9, np.geomspace(0.8, 1e-3, 10)], 1.0, "lazy"),  # a rise below 10%
    (np.r_[1.0, 3.0, 40.0, 5.0, np.geomspace(0.8, 1e-3, 10)], 1.0, "catapult"),
    (np.r_[1.0, 3.0, 40.0, np.inf, np.nan], np.nan, "divergent"),
    (np.r_[1.0, 3.0, 40.0, 5.0, 1.2], 1.0, "divergent"),  # not back below the start
    (np.geomspace(1.0, 1e-3, 20), 4.5, "divergent"),  # lambda_max above 2n/eta = 4
])
def test_phase_of_constructed_runs(loss, lam, phase):
    assert nd.classify_phase(loss, lam, learning_rate=2.0, n=4) == phase


def test_phase_report_of_real_runs():
    """A wide two-layer linear network below, between and beyond the edges 2n/lambda_0
    and (Lewkowycz et al.) about 4n/lambda_0."""
    data = nd.sphere_data(n=8, d=4, key=jax.random.key(1))
    net = nd.MLP(4, 1024, 1, "identity", key=2)
    lam = float(nd.ntk_lambda_max(net, data.X))
    reports = {}
    for x in (1.0, 3.0, 6.0):  # one compiled run serves the three step sizes
        sol = nd.solve(nd.GradientDescentProblem(net, data, 150, x * 8 / lam), save_ntk=True,
                       save_lambda_max=True, throw=False)
        reports[x] = nd.phase_report(sol)  # from the saved lambda_max
        if x == 3.0:  # the saved lambda_max (Lanczos) is the saved NTK's top eigenvalue
            np.testing.assert_allclose(sol.observables["lambda_max"],
                                       np.linalg.eigvalsh(np.asarray(sol.ntk))[:, -1], rtol=1e-10)
        # and the report from the saved NTKs alone (their eigenvalues) is the same
        from_ntk = nd.phase_report(eqx.tree_at(lambda s: s.observables, sol, {}))
        assert from_ntk.phase == reports[x].phase
    assert [reports[x].phase for x in (1.0, 3.0, 6.0)] == ["lazy", "catapult", "divergent"]
    assert reports[1.0].edge == pytest.approx(2 * 8 / lam, rel=1e-10)
    assert reports[3.0].lambda_final < 2 * 8 / reports[3.0].learning_rate < reports[3.0].lambda_initial
    assert reports[3.0].ntk_change > 10 * reports[1.0].ntk_change
