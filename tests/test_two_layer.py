"""The two-layer network of paper 002 (eq. (1)), weight decay (eq. (2)), the mean-field
time scale, random features as kernel regression, and the regime observables.

The suite is compile-bound, so the gradient flows here come in few shapes: their
TwoLayers have width M, tanh and sigma S, they save at three times and run on (X, Y)
without test inputs, so that flows which differ only in array values (keys, weights,
labels, time scales, weight decays, tolerances, spans) share one compiled solve (five
in all: alpha = sqrt(M), alpha = 1, the MLP, random features, centered). The solves
several tests look at are module fixtures."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nthdyn as nd
from _models import linear_model, sphere
from nthdyn._network._two_layer import mlp_correspondence

D, M, N = 3, 16, 5
X = sphere(N, D, 1)
Y = np.array([0.5, -0.3, 0.2, 0.8, -0.6])
X_TEST = sphere(3, D, 2)
S = 1.3                     # sigma of every TwoLayer (sw = sa = S for the MLP)
T = 0.5
SAVE = [0.0, 0.25, 0.5]     # the one save-time shape of the flows
TOL = {"rtol": 1e-12, "atol": 1e-12}
C = 0.5                     # the time scale of the alpha = sqrt(M) flows
LAM = (0.3, 0.7)            # (lambda_theta, lambda_u)


def two_layer(alpha, key, **kwargs):
    return nd.TwoLayer(D, M, alpha=alpha, activation="tanh", sigma=S, key=key, **kwargs)


def flow(net, tspan=(0.0, T), saveat=SAVE, labels=Y, *, save_regime=False, **options):
    problem = nd.GradientFlowProblem(net, (X, labels), tspan, **options)
    return nd.solve(problem, saveat=saveat, save_regime=save_regime, **TOL)


def ntk_pair(train="all"):
    """A TwoLayer at alpha = sqrt(m) and the MLP(depth=1) of the same key."""
    net = two_layer(math.sqrt(M), 7, train=train)
    frozen = (0,) if train == "readout" else ()
    mlp = nd.MLP(D, M, 1, "tanh", sw=S, sa=S, frozen=frozen, key=7)
    return net, mlp


@pytest.fixture(scope="module")
def ntk_flow():
    """The flow of the alpha = sqrt(M) TwoLayer of `ntk_pair`, time scale C."""
    return flow(ntk_pair()[0], time_scale=C)


@pytest.fixture(scope="module")
def mean_field_flow():
    """TwoLayer(alpha = 1) with weight decay LAM, mean-field time scale c = M, on [0, T]."""
    return flow(two_layer(1.0, 5), weight_decay=LAM, time_scale="mean_field")


@pytest.mark.parametrize("train", ["all", "readout"])
def test_two_layer_at_sqrt_m_is_mlp_depth_1(train, ntk_flow):
    """Same key => same weights (W^(1) = theta, a = u, sw = sa = sigma), outputs, NTK,
    K3, infinite-width kernels and gradient flow, to 1e-12."""
    net, mlp = ntk_pair(train)
    assert np.array_equal(net.theta, mlp.weights[0]) and np.array_equal(net.u, mlp.readout)
    same = nd.MLP.from_weights(**mlp_correspondence(net))
    assert np.array_equal(same(X), mlp(X))
    assert np.max(np.abs(net(X) - mlp(X))) < 1e-12
    assert np.max(np.abs(nd.ntk(net, X) - nd.ntk(mlp, X))) < 1e-12
    assert np.max(np.abs(nd.ntk_jacobian(net, X) - nd.ntk(net, X))) < 1e-12
    lim_net, lim_mlp = nd.limiting_kernels(net, X), nd.limiting_kernels(mlp, X)
    assert np.max(np.abs(lim_net.ntk - lim_mlp.ntk)) < 1e-12
    assert np.max(np.abs(lim_net.nngp - lim_mlp.nngp)) < 1e-12
    if train == "readout":
        return  # the flow of random features: test_random_features_flow_is_kernel_regression
    k3 = nd.hierarchy_kernel(net, X[:3], 3)
    assert np.max(np.abs(k3 - nd.hierarchy_kernel(mlp, X[:3], 3))) < 1e-12
    # the same function of the same parameters: the two flows take the same steps
    sols = [ntk_flow, flow(mlp, time_scale=C)]
    assert np.max(np.abs(sols[0].f - sols[1].f)) < 1e-12
    assert np.max(np.abs(sols[0].network.theta - sols[1].network.weights[0])) < 1e-12
    assert np.max(np.abs(sols[0].network.u - sols[1].network.readout)) < 1e-12


def test_two_layer_from_weights_and_remake():
    net = nd.TwoLayer(D, M, alpha=2.0, key=3)
    again = nd.TwoLayer.from_weights(net.theta, net.u, alpha=2.0)
    assert again.key is None and np.array_equal(again(X), net(X))
    wider = net.remake(width=2 * M)
    assert wider.theta.shape == (2 * M, D) and wider.alpha == 2.0


def test_expected_kernels_at_width_m():
    """The infinite_width kernels of a TwoLayer are the exact expectations at its width
    (alpha^2/m times the MLP limit): Monte Carlo over 300 seeds agrees within 4.5 standard
    errors, at alpha = 2 and m = 8, for the NTK."""
    net = nd.TwoLayer(D, 8, alpha=2.0, activation="erf", key=0)
    ds = nd.estimate_kernel_limit(net, X[:3], widths=[8], seeds=range(300))
    assert float(np.abs(ds.z).max()) < 4.5
    mlp_limit = nd.limiting_kernels(nd.MLP(D, 1, 1, "erf", key=0), X).ntk
    assert np.allclose(nd.limiting_kernels(net, X).ntk, 4.0 / 8 * mlp_limit, rtol=1e-14)


def test_symmetric_initialization_starts_at_zero():
    net = nd.TwoLayer(D, M, alpha=5.0, symmetric=True, key=1)
    assert np.max(np.abs(net(X))) < 1e-15
    assert np.array_equal(net.theta[: M // 2], net.theta[M // 2:])


def test_low_rank_descent_of_two_layer():
    """LowRankGradientDescent works through add_outer / factorable, as for the MLP."""
    net = nd.TwoLayer(D, 64, alpha=1.0, activation="tanh", key=2)
    problem = nd.GradientDescentProblem(net, (X, Y), steps=3, learning_rate=0.5)
    dense = nd.solve(problem, saveat=[3])
    factored = nd.solve(problem, nd.LowRankGradientDescent(low_rank=True), saveat=[3])
    assert np.max(np.abs(dense.f - factored.f)) < 1e-13


# -- weight decay and the time scale ------------------------------------------------

#: grad phi of a network's trained parameters (one compilation per network type)
gradient = eqx.filter_jit(lambda objective, params, static: objective.gradient(params, static, X, Y))


def test_weight_decay_gradient_is_autodiff_of_r():
    """grad (L + R) with R = 1/(2m) (lambda_u |u|^2 + lambda_theta |theta|^2) (eq. (2)),
    written out in plain JAX, for TwoLayer, an MLP (one lambda per map) and a network
    that is not layered (R = lambda/2 |w|^2)."""
    lam_theta, lam_u = LAM
    net = nd.TwoLayer(D, M, alpha=1.0, activation="tanh", key=4)

    def phi(theta, u):
        f = (1.0 / M) * jnp.tanh(X @ theta.T) @ u
        return 0.5 * jnp.mean((f - Y) ** 2) + (lam_u * u @ u + lam_theta * jnp.sum(theta**2)) / (2 * M)

    objective = nd.Objective.of(net, LAM)
    params, static = eqx.partition(net, net.trainable_filter())
    grad = gradient(objective, params, static)
    g_theta, g_u = jax.jit(jax.grad(phi, argnums=(0, 1)))(net.theta, net.u)
    assert np.max(np.abs(grad.theta - g_theta)) < 1e-15
    assert np.max(np.abs(grad.u - g_u)) < 1e-15
    value = eqx.filter_jit(objective.value)(params, static, X, Y)
    assert abs(value - jax.jit(phi)(net.theta, net.u)) < 1e-15

    mlp = nd.MLP(D, 8, 2, key=1)
    lams = (0.1, 0.2, 0.4)
    params, static = eqx.partition(mlp, mlp.trainable_filter())

    def phi_mlp(p):
        net = eqx.combine(p, static)
        r = sum(l * jnp.sum(a**2) for l, a in zip(lams, (*net.weights, net.readout))) / (2 * 8)
        return 0.5 * jnp.mean((net(X) - Y) ** 2) + r

    grad = gradient(nd.Objective.of(mlp, lams), params, static)
    expected = eqx.filter_jit(jax.grad(phi_mlp))(params)
    for a, b in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(expected)):
        assert np.max(np.abs(a - b)) < 1e-15

    model = linear_model()
    params, static = eqx.partition(model, model.trainable_filter())
    grad = gradient(nd.Objective.of(model, 0.5), params, static)
    expected = eqx.filter_jit(jax.grad(lambda w: 0.5 * jnp.mean((eqx.combine(w, static)(X) - Y) ** 2)
                                       + 0.25 * jnp.sum(w.w**2)))(params)
    assert np.max(np.abs(grad.w - expected.w)) < 1e-15


def test_weight_decay_in_descent_and_flow(mean_field_flow):
    """One descent step is theta - eta grad phi; the flow's df/dt at t0 is the jvp along
    -c grad phi (c = m: the mean-field time scale)."""
    net = two_layer(1.0, 5)
    params, static = eqx.partition(net, net.trainable_filter())
    grad = gradient(nd.Objective.of(net, LAM), params, static)
    step = nd.solve(nd.GradientDescentProblem(net, (X, Y), 1, 0.1, weight_decay=LAM), saveat=[1])
    assert np.max(np.abs(step.network.u - (net.u - 0.1 * grad.u))) < 1e-15
    assert np.max(np.abs(step.network.theta - (net.theta - 0.1 * grad.theta))) < 1e-15
    velocity = jax.tree_util.tree_map(lambda g: -M * g, grad)
    _, expected = jax.jvp(lambda p: eqx.combine(p, static)(X), (params,), (velocity,))
    assert np.max(np.abs(mean_field_flow.dfdt[0] - expected)) < 1e-13


def test_mean_field_time_scale_is_a_time_change(mean_field_flow):
    """d theta/dt = -m grad phi over [0, T] is the plain flow (c = 1) over [0, m T] (here
    with weight decay)."""
    slow = flow(two_layer(1.0, 5), (0.0, M * T), [M * t for t in SAVE], weight_decay=LAM)
    assert np.max(np.abs(mean_field_flow.f - slow.f)) < 1e-10
    assert np.max(np.abs(mean_field_flow.network.u - slow.network.u)) < 1e-10


# -- random features ------------------------------------------------------------------


def test_random_features_flow_is_kernel_regression():
    """train="readout": the flow is kernel regression with the finite RF kernel
    (alpha/m)^2 sum_j h(theta_j.x) h(theta_j.x') (closed form), to 1e-10, on the training
    and test points; the structured NTK is that kernel."""
    alpha = 3.0
    net = nd.TwoLayer(D, M, alpha=alpha, activation="sigmoid", train="readout", key=8)

    def rf_kernel(A, B):
        return (alpha / M) ** 2 * jax.nn.sigmoid(A @ net.theta.T) @ jax.nn.sigmoid(B @ net.theta.T).T

    assert np.max(np.abs(nd.ntk(net, X) - rf_kernel(X, X))) < 1e-15
    T = 40.0
    ts = np.linspace(0.0, T, 5)
    flow = nd.solve(nd.GradientFlowProblem(net, (X, Y), (0.0, T), test=X_TEST), nd.Tsit5(),
                    saveat=ts, rtol=1e-13, atol=1e-13)
    krr = nd.solve(nd.KernelRegressionProblem(rf_kernel, (X, Y), (0.0, T), X_TEST, f0=net(X),
                                              f0_test=net(X_TEST)), saveat=ts)
    assert np.max(np.abs(flow.f - krr.f)) < 1e-10
    assert np.max(np.abs(flow.f_test - krr.f_test)) < 1e-10
    assert np.array_equal(flow.network.theta, net.theta)  # frozen


# -- regime observables and centering ----------------------------------------------------


@pytest.fixture(scope="module")
def centered_flow():
    """TwoLayer(alpha = 4) trained centered, with the regime observables."""
    net = two_layer(4.0, 10)
    return net, flow(net, time_scale=C, center=True, save_regime=True)


def test_regime_observables(centered_flow):
    net, sol = centered_flow
    obs = sol.observables
    end = sol.network
    movement = [np.linalg.norm(end.theta - net.theta) / np.linalg.norm(net.theta),
                np.linalg.norm(end.u - net.u) / np.linalg.norm(net.u)]
    assert np.allclose(obs["movement"][-1], movement, rtol=1e-12) and np.all(obs["movement"][0] == 0)
    K0, K1 = nd.ntk(net, X), nd.ntk(end, X)
    assert np.isclose(obs["ntk_change"][-1], np.linalg.norm(K1 - K0) / np.linalg.norm(K0), rtol=1e-10)
    assert np.array_equal(obs["particle_u"][0], net.u)
    assert np.max(np.abs(obs["particle_theta"][-1] - end.theta)) < 1e-13
    ds = nd.to_dataset(sol)
    assert ds.particle_theta.dims == ("time", "neuron", "input_dim")
    assert ds.movement.attrs["units"] == "1"
    fraction = nd.wasted_fraction(ds.particle_u, threshold=0.5)
    assert np.allclose(fraction, np.mean(np.abs(obs["particle_u"]) < 0.5, axis=-1))
    a, b = nd.MLP(D, 8, 2, key=0), nd.MLP(D, 8, 2, key=1)
    expected = [np.linalg.norm(p - q) / np.linalg.norm(q) for p, q in
                zip((*b.weights, b.readout), (*a.weights, a.readout))]
    assert np.allclose(nd.relative_movement(b, a), expected, rtol=1e-14)
    with pytest.raises(ValueError, match="no single hidden layer"):
        nd.particles(b)


def test_centering_shifts_the_labels(centered_flow):
    """center=True trains f - f(theta_0): the same parameters as the plain flow with labels
    y + f(theta_0), and outputs that start at 0."""
    net, centered = centered_flow
    f0 = np.asarray(net(X))
    shifted = flow(net, labels=Y + f0, time_scale=C)
    assert np.max(np.abs(centered.f[0])) < 1e-15
    assert np.max(np.abs(centered.f - (shifted.f - f0))) < 1e-9
    assert np.max(np.abs(centered.network.u - shifted.network.u)) < 1e-9


def test_per_map_time_scales_reparametrize_alpha(ntk_flow):
    """f_alpha(theta, u) = f_1(theta, alpha u): the flow of TwoLayer(alpha) with time scale c
    is the flow of TwoLayer(1) from (theta, alpha u) with time scales (c, c alpha^2)
    (per-layer learning rates, paper 002 eq. (11)-(13))."""
    net, alpha = ntk_pair()[0], math.sqrt(M)
    # the alpha = 1 network of the same key has the same theta; its u is set to alpha u
    one = eqx.tree_at(lambda n: n.u, two_layer(1.0, 7), alpha * net.u)
    assert np.array_equal(one.theta, net.theta)
    b = flow(one, time_scale=(C, C * alpha**2), weight_decay=0.0)
    assert np.max(np.abs(ntk_flow.f - b.f)) < 1e-10
    assert np.max(np.abs(alpha * ntk_flow.network.u - b.network.u)) < 1e-9


def test_sigmoid_teacher_data_of_fig_6():
    teacher, data, X_test = nd.sigmoid_teacher_data(2000, 7, key=2020)
    again, same, _ = nd.sigmoid_teacher_data(2000, 7, key=2020)
    np.testing.assert_array_equal(data.y, same.y)  # the key decides every draw
    assert data.X.shape == (2000, 2) and X_test.shape == (7, 2)
    assert teacher.alpha == 1.0 and np.all(np.asarray(teacher.u) == 1.0)
    noise = np.asarray(data.y - teacher(data.X))  # labels are F4(x) + N(0, 0.1^2)
    assert abs(noise.std() - 0.1) < 4 * 0.1 / np.sqrt(2 * 2000)
    assert abs(noise.mean()) < 4 * 0.1 / np.sqrt(2000)
    assert abs(np.asarray(data.X).std() - 100.0) < 4 * 100.0 / np.sqrt(2 * 4000)
