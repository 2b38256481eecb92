"""Kernels of the Neural Tangent Hierarchy, Huang & Yau eq. (9)-(10).

`K(r+1)(a_1, ..., a_r, b) = <grad_theta K(r)(a_1, ..., a_r), grad_theta f_b>`.

Checked against a plain-JAX reference written here (flat parameters, Hessians,
a nested jvp of `J J^T`), between the two bases of `nthdyn` (structured and
Jacobian), for the slot conventions (symmetry, test points in the first slot,
matrix-free contractions), on a model linear in its parameters (no higher
kernels), and against the exact gradient flow: `d/dt K(r) = -1/n K(r+1)[f - y]`.

Sizes are tiny (widths 8 and 64, n = 4, d = 3): most of the time is compilation.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import nthdyn as nd

N, D, WIDTH = 4, 3, 8


def _sphere(n, d, seed):
    X = np.random.default_rng(seed).normal(size=(n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


X = _sphere(N, D, 0)
X_TEST = _sphere(2, D, 1)  # two test points for the first slot (eq. (22))
Y = np.random.default_rng(2).normal(size=N)

NETWORKS = {
    # the same shapes as tests/test_nth.py (width 64, n = 4, two test points):
    # its kernels then reuse these compilations when both files run together
    "mlp1-tanh": lambda: nd.MLP(D, 64, 1, "tanh", key=jax.random.key(0)),
    "mlp2-softplus": lambda: nd.MLP(D, WIDTH, 2, "softplus", sw=1.3, key=jax.random.key(1)),
    "jacot2-tanh": lambda: nd.JacotMLP(D, WIDTH, 2, "tanh", beta=0.5, key=jax.random.key(2)),
}

_CACHE = {}


def kernel(name, order, method="auto"):
    """`hierarchy_kernel` on `X`, computed once per (network, order, method)."""
    key = (name, order, method)
    if key not in _CACHE:
        _CACHE[key] = np.asarray(nd.hierarchy_kernel(NETWORKS[name](), X, order, method=method))
    return _CACHE[key]


def _rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == np.float64
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


# ---------------------------------------------------------------------------
# An independent plain-JAX reference on the flattened parameter vector.


def _flat(network):
    params, static = eqx.partition(network, eqx.is_inexact_array)
    theta, unravel = ravel_pytree(params)

    def f(theta, x):
        return eqx.combine(unravel(theta), static).apply(x)

    return theta, f


def reference_kernels(network, X):
    """`(K3, K4)` in plain JAX on the flat parameter vector, one compiled function.

    - `K3(a1, a2, b) = g_b^T H_a1 g_a2 + g_a1^T H_a2 g_b` with `g_a = grad f(x_a)`
      and `H_a = hess f(x_a)`;
    - `K4` from the definition: `theta -> J J^T` differentiated (jax.jvp) along
      the field `theta -> grad f_b(theta)`, the new slot last, twice.

    XLA's backend optimisation is off for this function only: the nested
    derivatives then compile in about half the time (same values to rounding).
    """
    theta0, f = _flat(network)

    def jac(theta):
        return jax.vmap(jax.grad(f), (None, 0))(theta, X)  # (n, P)

    def k2(theta):
        J = jac(theta)
        return J @ J.T

    def derive(fn):
        def derived(theta):
            G = jac(theta)  # the direction moves with theta
            along = jax.vmap(lambda v: jax.jvp(fn, (theta,), (v,))[1])(G)
            return jnp.moveaxis(along, 0, -1)

        return derived

    def both(theta):
        g = jac(theta)
        H = jax.vmap(jax.hessian(f), (None, 0))(theta, X)  # (n, P, P)
        k3 = jnp.einsum("bp,Apq,Cq->ACb", g, H, g) + jnp.einsum("Ap,Cpq,bq->ACb", g, H, g)
        return k3, derive(derive(k2))(theta)

    compiled = jax.jit(both).lower(theta0).compile(
        compiler_options={"xla_backend_optimization_level": 0})
    return tuple(np.asarray(k) for k in compiled(theta0))


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_k3_k4_structured_equal_plain_jax_reference(name):
    net = NETWORKS[name]()
    K3_ref, K4_ref = reference_kernels(net, X)
    K3 = kernel(name, 3, "structured")
    K4 = kernel(name, 4, "structured")
    assert K3.shape == (N, N, N) and K4.shape == (N, N, N, N)
    assert _rel_err(K3, K3_ref) <= 1e-10
    assert _rel_err(K4, K4_ref) <= 1e-10
    # the kernels are not trivially small: they carry the 1/sqrt(m) corrections
    assert np.max(np.abs(K3)) > 1e-3 and np.max(np.abs(K4)) > 1e-3


@pytest.mark.parametrize("order", [2, 3, 4])
def test_structured_equals_jacobian(order):
    name = "mlp1-tanh"
    K = kernel(name, order, "structured")
    assert K.shape == (N,) * order
    assert _rel_err(K, kernel(name, order, "jacobian")) <= 1e-12


@pytest.mark.parametrize("order", [2, 3, 4])
def test_symmetric_in_first_two_slots(order):
    # K2 on both routes is symmetric by construction; K3, K4 only if the slots are right
    for name in ("mlp1-tanh", "jacot2-tanh") if order > 2 else ("mlp1-tanh",):
        K = kernel(name, order, "structured")
        assert _rel_err(np.swapaxes(K, 0, 1), K) <= 1e-13


def test_not_symmetric_in_last_two_slots():
    """The convention: `K(r+1)(..., b)` differentiates along `grad f_b`, a field
    that moves with theta, so the last slots do not commute:
    `K4(a1, a2, b, c) - K4(a1, a2, c, b) = <grad K2(a1, a2), H_b g_c - H_c g_b>`."""
    for name in ("mlp1-tanh", "jacot2-tanh"):
        K4 = kernel(name, 4, "structured")
        assert _rel_err(np.swapaxes(K4, 2, 3), K4) > 1e-2
        K3 = kernel(name, 3, "structured")  # K3 neither, in slots 2 and 3
        assert _rel_err(np.swapaxes(K3, 1, 2), K3) > 1e-2


# ---------------------------------------------------------------------------
# The first slot over other points (eq. (22)).

TEST_NET = "mlp1-tanh"


def first_slot_kernel(order):
    key = ("test", order)
    if key not in _CACHE:
        _CACHE[key] = np.asarray(
            nd.hierarchy_kernel(NETWORKS[TEST_NET](), X, order, X_first=X_TEST)
        )
    return _CACHE[key]


def test_first_slot_explicit_training_inputs():
    """The unsymmetric route (base `K2(X_first, X)`) through two derivatives."""
    K = nd.hierarchy_kernel(NETWORKS[TEST_NET](), X, 4, X_first=X)
    assert _rel_err(K, kernel(TEST_NET, 4)) <= 1e-13


def test_first_slot_test_points_are_a_block_of_the_joint_kernel():
    """K4 with test points first is the block of K4 on `[X_test; X]` whose first
    slot runs over the test points and every other slot over `X` (the joint
    kernel's later slots, and its derivative directions, run over all 6 points)."""
    n1 = X_TEST.shape[0]
    assert first_slot_kernel(3).shape == (n1, N, N)
    K = first_slot_kernel(4)
    assert K.shape == (n1, N, N, N)
    joint = np.asarray(nd.hierarchy_kernel(NETWORKS[TEST_NET](), np.concatenate([X_TEST, X]), 4))
    assert joint.shape == (n1 + N,) * 4
    block = joint[:n1, n1:, n1:, n1:]
    assert _rel_err(K, block) <= 1e-12
    # the block is not the training kernel (the first slot really moved)
    assert _rel_err(kernel(TEST_NET, 4)[:n1], K) > 1e-2


# ---------------------------------------------------------------------------
# Matrix-free contractions of the last slots.


def test_contractions_equal_full_tensors():
    net = NETWORKS[TEST_NET]()
    rng = np.random.default_rng(3)
    c1, c2 = rng.normal(size=N), rng.normal(size=N)
    K3, K4 = kernel(TEST_NET, 3), kernel(TEST_NET, 4)

    one = nd.hierarchy_contraction(net, X, [c1])
    assert one.shape == (N, N)
    assert _rel_err(one, np.einsum("abc,c->ab", K3, c1)) <= 1e-12
    assert _rel_err(one, nd.contract_last(K3, c1)) <= 1e-12

    two = nd.hierarchy_contraction(net, X, [c1, c2])
    assert _rel_err(two, np.einsum("abcd,c,d->ab", K4, c1, c2)) <= 1e-12
    # the order of the vectors matters (slot 3 with c1, slot 4 with c2)
    assert _rel_err(np.einsum("abcd,c,d->ab", K4, c2, c1), two) > 1e-3

    # with test points in the first slot
    Kx3, Kx4 = first_slot_kernel(3), first_slot_kernel(4)
    one_x = nd.hierarchy_contraction(net, X, [c1], X_first=X_TEST)
    assert one_x.shape == (X_TEST.shape[0], N)
    assert _rel_err(one_x, np.einsum("abc,c->ab", Kx3, c1)) <= 1e-12
    two_x = nd.hierarchy_contraction(net, X, [c1, c2], X_first=X_TEST)
    assert _rel_err(two_x, np.einsum("abcd,c,d->ab", Kx4, c1, c2)) <= 1e-12


# ---------------------------------------------------------------------------
# A model linear in its parameters has no higher kernels.


def _features(x):
    return jnp.concatenate([x, jnp.sin(2.0 * x), x[:1] * x[1:]])


class FeatureModel(nd.AbstractNetwork):
    """`f(x) = w . phi(x)` with fixed features (`nonlinear`: `tanh(w . phi(x))`)."""

    w: jax.Array
    in_size: int = eqx.field(static=True)
    nonlinear: bool = eqx.field(static=True)

    def __init__(self, w, nonlinear=False):
        self.w, self.in_size, self.nonlinear = w, D, nonlinear

    def apply(self, x):
        z = self.w @ _features(x)
        return jnp.tanh(z) if self.nonlinear else z


@pytest.mark.parametrize("method", ["jacobian", "auto"])
def test_linear_model_has_no_higher_kernels(method):
    w = jax.random.normal(jax.random.key(4), (8,), jnp.float64)
    net = FeatureModel(w)
    Phi = np.stack([np.asarray(_features(jnp.asarray(x))) for x in X])
    K2 = nd.hierarchy_kernel(net, X, 2, method=method)
    assert _rel_err(K2, Phi @ Phi.T) <= 1e-13
    for order in (3, 4):
        K = np.asarray(nd.hierarchy_kernel(net, X, order, method=method))
        assert K.shape == (N,) * order
        assert np.max(np.abs(K)) <= 1e-14
    # the same features through tanh: the parameters enter non-linearly, K3 != 0
    K3 = np.asarray(nd.hierarchy_kernel(FeatureModel(w, nonlinear=True), X, 3, method=method))
    assert np.max(np.abs(K3)) > 1e-2


def test_structured_method_needs_a_layered_network():
    net = FeatureModel(jnp.ones(8))
    with pytest.raises(TypeError, match="jacobian"):
        nd.hierarchy_kernel(net, X, 3, method="structured")
    with pytest.raises(ValueError, match="method="):
        nd.hierarchy_kernel(net, X, 3, method="hessian")


# ---------------------------------------------------------------------------
# The hierarchy along the exact flow, eq. (10): d/dt K(r) = -1/n K(r+1)[f - y].

FLOW_NET = "mlp1-tanh"
H_STEP = 0.01  # finite-difference step in time: the O(h^4) error is ~1.5e-10 here
T_STAR_STEPS = 10  # t* = 10 h = 0.1


def _flow_networks():
    """The network at t = 0, h, 2h, ...: one compiled solve over (0, h), chained
    (`Solution.network` is the network at the end of the span)."""
    nets = [NETWORKS[FLOW_NET]()]
    for _ in range(T_STAR_STEPS + 2):
        problem = nd.GradientFlowProblem(nets[-1], (X, Y), (0.0, H_STEP))
        sol = nd.solve(problem, nd.Dopri8(), saveat=[H_STEP], rtol=1e-13, atol=1e-13)
        nets.append(sol.network)
    return nets


def test_time_derivative_along_the_flow_eq_10():
    nets = _flow_networks()
    window = nets[T_STAR_STEPS - 2: T_STAR_STEPS + 3]  # t* - 2h, ..., t* + 2h
    net_star = nets[T_STAR_STEPS]
    residual = np.asarray(net_star(X)) - Y
    for order in (2, 3):
        K = [np.asarray(nd.hierarchy_kernel(net, X, order)) for net in window]
        dK_dt = (K[0] - 8 * K[1] + 8 * K[3] - K[4]) / (12 * H_STEP)  # O(h^4)
        upper = np.asarray(nd.hierarchy_kernel(net_star, X, order + 1))
        expected = -nd.contract_last(upper, residual) / N
        assert _rel_err(dK_dt, expected) <= 1e-8
        # the kernel really moves over the window (2.5e-4 for K2, 5e-3 for K3)
        assert _rel_err(K[4], K[0]) > 1e-4


def test_time_derivative_by_jvp_along_minus_grad_loss():
    """The same identity without a solver: the jvp of `theta -> K(r)(theta)` along
    the gradient-flow velocity `-grad L`, `L = 1/(2n) ||f - y||^2`."""
    net = NETWORKS[FLOW_NET]()
    params, static = eqx.partition(net, eqx.is_inexact_array)

    def loss(p):
        return 0.5 * jnp.mean((eqx.combine(p, static)(X) - Y) ** 2)

    velocity = jax.tree_util.tree_map(jnp.negative, jax.grad(loss)(params))
    residual = np.asarray(net(X)) - Y
    for order in (2, 3):
        def K_of(p):
            return nd.hierarchy_kernel(eqx.combine(p, static), X, order)

        _, dK_dt = jax.jvp(K_of, (params,), (velocity,))
        upper = nd.hierarchy_kernel(net, X, order + 1)
        assert _rel_err(dK_dt, -nd.contract_last(upper, residual) / N) <= 1e-12


# ---------------------------------------------------------------------------
# Errors.


def test_order_must_be_at_least_two():
    net = NETWORKS["mlp1-tanh"]()
    for order in (1, 0, 2.0, True):
        with pytest.raises(ValueError, match="order"):
            nd.hierarchy_kernel(net, X, order)


def test_relu_has_the_ntk_but_no_higher_kernels():
    net = nd.MLP(D, WIDTH, 1, "relu", key=jax.random.key(5))
    with pytest.raises(ValueError, match="smooth"):
        nd.hierarchy_kernel(net, X, 3)
    with pytest.raises(ValueError, match="smooth"):
        nd.hierarchy_contraction(net, X, [np.ones(N)])
    K2 = nd.hierarchy_kernel(net, X, 2)
    assert _rel_err(K2, nd.ntk(net, X)) <= 1e-14


def test_max_bytes_refuses_large_tensors():
    net = NETWORKS["mlp1-tanh"]()
    X10 = _sphere(10, D, 6)
    size = 8 * 10 * 10**4  # K(5) on 10 points: 10 x 10^4 float64 entries
    with pytest.raises(MemoryError, match="hierarchy_contraction") as info:
        nd.hierarchy_kernel(net, X10, 5, max_bytes=size - 1)
    assert f"{size / 1e9:.3g} GB" in str(info.value)
    with pytest.raises(MemoryError, match="K\\(5\\)"):
        nd.hierarchy_kernel(net, X10, 5, max_bytes=1000)


def test_contraction_vector_shapes():
    net = NETWORKS["mlp1-tanh"]()
    with pytest.raises(ValueError, match=r"vectors\[0\]"):
        nd.hierarchy_contraction(net, X, [np.ones(N + 1)])
    with pytest.raises(ValueError, match=r"vectors\[1\]"):
        nd.hierarchy_contraction(net, X, [np.ones(N), np.ones((N, 1))])
