"""The NTK K2 (Huang & Yau eq. 7): structured route against plain-JAX J J^T,
symmetry, positive semi-definiteness, a linear model, and per-layer Grams."""

import math

import equinox as eqx
import jax
import numpy as np
import pytest

import nthdyn as nd
from _models import features, linear_model, sphere


X1 = sphere(5, 3, 0)
X2 = sphere(3, 3, 1)
X = np.concatenate([X1, X2])

NETWORKS = {
    "mlp1-tanh": lambda: nd.MLP(3, 16, 1, "tanh", key=jax.random.key(0)),
    "mlp3-tanh": lambda: nd.MLP(3, 16, 3, "tanh", sw=1.2, sa=0.8, key=jax.random.key(1)),
    "mlp3-relu": lambda: nd.MLP(3, 16, 3, "relu", key=jax.random.key(2)),
    "mlp3-softplus4": lambda: nd.MLP(3, 16, 3, nd.Softplus(4.0), key=jax.random.key(3)),
    "mlp1-erf": lambda: nd.MLP(3, 16, 1, "erf", key=jax.random.key(4)),
    "jacot2-relu": lambda: nd.JacotMLP(3, 16, 2, "relu", key=jax.random.key(5)),
    "jacot2-gelu": lambda: nd.JacotMLP(3, 16, 2, "gelu", beta=0.5, key=jax.random.key(6)),
}


def _rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == np.float64
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


# the reference, compiled once per network (eager op-by-op dispatch is slow)
jacobian_ntk = eqx.filter_jit(nd.ntk_jacobian)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_structured_ntk_equals_jacobian_ntk(name):
    net = NETWORKS[name]()
    J = jacobian_ntk(net, X)
    K = nd.ntk(net, X)
    assert K.shape == (8, 8)
    assert _rel_err(K, J) <= 1e-12
    # two different input sets: K(X1, X2) is the off-diagonal block
    K12 = nd.ntk(net, X1, X2)
    assert K12.shape == (5, 3)
    assert _rel_err(K12, J[:5, 5:]) <= 1e-12


def test_jacobian_ntk_with_two_input_sets():
    net = NETWORKS["mlp3-tanh"]()
    J = jacobian_ntk(net, X)
    J12 = jacobian_ntk(net, X1, X2)
    assert J12.shape == (5, 3)
    assert _rel_err(J12, J[:5, 5:]) <= 1e-13


@pytest.mark.parametrize("name", ["mlp3-tanh", "mlp3-relu", "jacot2-relu"])
def test_ntk_is_symmetric_and_positive_semidefinite(name):
    net = NETWORKS[name]()
    K = np.asarray(nd.ntk(net, X))
    assert np.array_equal(K, K.T)
    eigenvalues = np.linalg.eigvalsh(K)
    assert eigenvalues.max() > 0
    assert eigenvalues.min() >= -1e-12 * eigenvalues.max()
    # the diagonal is a squared gradient norm
    assert np.all(np.diag(K) > 0)


def test_ntk_of_linear_model_is_feature_gram():
    net = linear_model()
    assert nd.parameter_count(net) == 9
    Phi = np.stack([features(x, np) for x in X])
    assert _rel_err(jacobian_ntk(net, X), Phi @ Phi.T) <= 1e-13
    assert _rel_err(jacobian_ntk(net, X1, X2), Phi[:5] @ Phi[5:].T) <= 1e-13
    # nd.ntk falls back to the Jacobian route for a non-layered network
    assert _rel_err(nd.ntk(net, X), Phi @ Phi.T) <= 1e-13
    # and the kernel does not depend on the parameters
    assert _rel_err(nd.ntk(linear_model(seed=1), X), Phi @ Phi.T) <= 1e-13


def test_ntk_is_sum_of_layer_grams_eq_7():
    """Depth H = 2, tanh: K2 = G^(1) + G^(2) + G^(3) with G^(l) from eq. (7)."""
    net = nd.MLP(3, 16, 2, "tanh", sw=1.1, sa=0.9, key=jax.random.key(9))
    m = net.width
    W1, W2 = (np.asarray(w) for w in net.weights)
    a = np.asarray(net.readout)
    x0 = X  # rows x_alpha^(0)
    h1 = x0 @ W1.T
    x1 = np.tanh(h1) / math.sqrt(m)
    h2 = x1 @ W2.T
    x2 = np.tanh(h2) / math.sqrt(m)
    d1, d2 = 1 - np.tanh(h1) ** 2, 1 - np.tanh(h2) ** 2  # sigma'_l (diagonal)
    v2 = d2 * a / math.sqrt(m)  # sigma'_2 a / sqrt(m)
    v1 = d1 * (v2 @ W2) / math.sqrt(m)  # sigma'_1 W2^T / sqrt(m) sigma'_2 a / sqrt(m)
    G1 = (v1 @ v1.T) * (x0 @ x0.T)
    G2 = (v2 @ v2.T) * (x1 @ x1.T)
    G3 = x2 @ x2.T

    np.testing.assert_allclose(np.asarray(net(X)), x2 @ a, rtol=1e-13)
    K = np.asarray(nd.ntk(net, X))
    assert _rel_err(K, G1 + G2 + G3) <= 1e-12
    # each Gram matters: dropping any one of them is far off
    for G in (G1, G2, G3):
        assert _rel_err(K, G1 + G2 + G3 - G) > 1e-3


def test_fast_dispatch_keeps_networks_of_one_shape_apart():
    """`fast_jit` keys its cache by the tree structure and the static leaves: networks
    of the same shapes with another activation or frozen maps get their own program."""
    X = nd.sphere_data(n=4, d=3, key=jax.random.key(0)).X
    nets = [nd.MLP(3, 8, 2, activation, key=1, frozen=frozen)
            for activation in ("tanh", "softplus") for frozen in ((), (1,))]
    kernels = [np.asarray(nd.ntk(net, X)) for net in nets]
    for net, K in zip(nets, kernels):
        np.testing.assert_allclose(K, nd.ntk_jacobian(net, X), rtol=0, atol=1e-13)
    assert min(np.abs(a - b).max() for i, a in enumerate(kernels) for b in kernels[i + 1:]) > 1e-3


def test_host_checks_run_once_per_jax_array_and_still_refuse_bad_values():
    """A JAX array is immutable: once its values passed the host checks, the same array
    is not checked again (the record goes when the array is freed); a bad array is
    refused on every call, and a NumPy array (mutable) is checked every time."""
    import gc

    from nthdyn._checks import _PASSED, passed_before

    net = nd.MLP(3, 8, 1, "softplus", key=0)
    X = jax.numpy.asarray(sphere(4, 3, 5))
    c = jax.numpy.linspace(-1.0, 1.0, 4)
    assert not passed_before(X, "inputs")
    first = nd.hierarchy_contraction(net, X, [c])
    assert passed_before(X, "inputs") and passed_before(c, "finite")
    np.testing.assert_array_equal(nd.hierarchy_contraction(net, X, [c]), first)
    key = ("inputs", id(X))
    del X
    gc.collect()
    assert key not in _PASSED
    bad = jax.numpy.asarray(sphere(4, 3, 5)).at[2, 1].set(np.nan)
    for _ in range(2):
        with pytest.raises(ValueError, match=r"X1 has a non-finite value \(nan\) at row 2, column 1"):
            nd.ntk(net, bad)
    values = sphere(4, 3, 5)
    nd.ntk(net, values)
    values[0] = 0.0
    with pytest.raises(ValueError, match="X1 row 0 has norm 0"):
        nd.ntk(net, values)
    bad_c = c.at[1].set(np.inf)
    for _ in range(2):
        with pytest.raises(ValueError, match=r"vectors\[0\] has a non-finite entry \(inf\)"):
            nd.hierarchy_contraction(net, sphere(4, 3, 5), [bad_c])


class _ScaledModel(nd.AbstractNetwork):
    """f(x) = scale * tanh(w . phi(x)), `scale` a Python number, a leaf that is not an
    array, read in a Python `if` (so it must be static: traced, it cannot be)."""

    w: jax.Array
    scale: float
    in_size: int = eqx.field(static=True)

    def __init__(self, w, scale):
        self.w, self.scale, self.in_size = w, scale, 3

    def squash(self, z):
        return jax.numpy.tanh(z)

    def apply(self, x):
        if self.scale == 0:
            return 0.0 * x[0]
        return self.scale * self.squash(self.w @ features(x, jax.numpy))


class _SquashedModel(_ScaledModel):
    """`_ScaledModel` with tanh held in a field: a function leaf, which `jax.jit` refuses."""

    squash: object

    def __init__(self, w, scale):
        super().__init__(w, scale)
        self.squash = jax.numpy.tanh


@pytest.mark.parametrize("model", [_ScaledModel, _SquashedModel], ids=["number", "function"])
def test_kernels_take_networks_with_leaves_that_are_not_arrays(model):
    """The kernels dispatch through `jax.jit` (`fast_jit`); a network with a number leaf
    used as a concrete value, or a function leaf, takes the general path (those leaves
    static) and gives the closed forms of K2 and K3 for f = s tanh(w . phi):
    K2(a, b) = s^2 t'_a t'_b <phi_a, phi_b> and K3(a, b, c) = s^3 <phi_a, phi_b> t'_c
    (t''_a t'_b <phi_a, phi_c> + t'_a t''_b <phi_b, phi_c>), t' = 1 - tanh^2, t'' = -2 tanh t'."""
    w = jax.random.normal(jax.random.key(3), (9,), jax.numpy.float64) / 3
    Xs = sphere(5, 3, 7)
    phi = np.stack([features(x, np) for x in Xs])
    tanh = np.tanh(phi @ np.asarray(w))
    d1, gram = 1 - tanh**2, phi @ phi.T
    d2 = -2 * tanh * d1
    for scale in (0.7, 1.3):  # another value of a static leaf: another program
        net = model(w, scale)
        K2 = scale**2 * np.outer(d1, d1) * gram
        K3 = scale**3 * gram[:, :, None] * d1[None, None, :] * (
            (d2[:, None] * d1[None, :])[:, :, None] * gram[:, None, :]
            + (d1[:, None] * d2[None, :])[:, :, None] * gram[None, :, :])
        for _ in range(2):  # the second call takes the general path at once
            np.testing.assert_allclose(nd.ntk(net, Xs), K2, rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(nd.hierarchy_kernel(net, Xs, 3), K3, rtol=1e-12,
                                       atol=1e-15)
    np.testing.assert_allclose(nd.ntk(model(w, 0.0), Xs), 0.0, atol=0)


def test_fast_jit_static_arguments_general_leaves_and_errors():
    """`fast_jit`: named arguments are static; a function leaf is static (the general
    path, per argument types); a TypeError of the function itself surfaces on both
    paths (on the `jax.jit` one it is not mistaken for a leaf that is not an array)."""
    from nthdyn._dispatch import fast_jit

    traces = []

    @fast_jit(static=("power",))
    def power_of(tree, power):
        traces.append(power)
        if power < 0:
            raise TypeError(f"power={power}: negative")
        return tree.get("map", jax.numpy.exp)(tree["x"]) ** power

    x = jax.numpy.arange(3.0)
    same = dict(rtol=1e-15, atol=0)
    np.testing.assert_allclose(power_of({"x": x}, 3), np.exp(x) ** 3, **same)
    np.testing.assert_allclose(power_of({"x": x + 1}, power=3), np.exp(x + 1) ** 3, **same)
    np.testing.assert_allclose(power_of({"map": jax.numpy.sin, "x": x}, 2), np.sin(x) ** 2,
                               **same)
    np.testing.assert_allclose(power_of({"map": jax.numpy.cos, "x": x}, power=2),
                               np.cos(x) ** 2, **same)
    np.testing.assert_allclose(power_of({"map": jax.numpy.sin, "x": x + 1}, 2),
                               np.sin(x + 1) ** 2, **same)
    # power 3 by position and by name (jax.jit keys these apart), then sin and cos
    assert traces == [3, 3, 2, 2]
    with pytest.raises(TypeError, match="power=-1: negative"):
        power_of({"x": x}, -1)  # the jax.jit path: every leaf an array
    with pytest.raises(TypeError, match="power=-2: negative"):
        power_of({"x": x, "map": jax.numpy.exp}, -2)  # the general path
    np.testing.assert_allclose(power_of({"x": x}, 1), np.exp(x), **same)


def test_a_kernel_call_is_checked_once_and_keeps_nothing_alive():
    """`kernel_call` remembers the checks of a network with JAX inputs by identity (all
    immutable): the record holds them weakly (freed inputs take it with them) and
    nothing is remembered for NumPy inputs (mutable) or converted copies."""
    import gc
    import weakref

    from nthdyn._checks import recall

    key = ("kernel call", "auto", None)
    net = nd.MLP(3, 8, 1, "softplus", key=0)
    X = jax.numpy.asarray(sphere(4, 3, 5))
    c = jax.numpy.linspace(-1.0, 1.0, 4)
    K = nd.hierarchy_contraction(net, X, [c])
    assert recall(key, net, X, None) is not None
    np.testing.assert_array_equal(nd.hierarchy_contraction(net, X, [c]), K)
    np.testing.assert_allclose(nd.hierarchy_kernel(net, X, 3) @ c, K, rtol=1e-13, atol=1e-16)
    alive = weakref.ref(X)
    del X
    gc.collect()
    assert alive() is None
    values = sphere(4, 3, 5)
    nd.hierarchy_kernel(net, values, 3)
    assert recall(key, net, values, None) is None
    single = jax.numpy.asarray(values, jax.numpy.float32)
    nd.hierarchy_kernel(net, single, 3)
    assert recall(key, net, single, None) is None
    values[0] = 0.0  # a NumPy array can change: checked again
    with pytest.raises(ValueError, match="X row 0 has norm 0"):
        nd.hierarchy_kernel(net, values, 3)


def test_initialisation_in_one_program_equals_drawing_each_array():
    """`normal_draws` (all of a network's initial weights in one compiled program) gives
    bit for bit the arrays of `scale * jax.random.normal(k_i, shape_i)` drawn one by one
    from `jax.random.split(key)`, for every family (and so the seeds keep their networks)."""
    normal = jax.random.normal
    key = jax.random.key(7)
    mlp = nd.MLP(3, 16, 3, sw=1.3, sa=0.7, key=key)
    k = jax.random.split(key, 4)
    expected = [1.3 * normal(k[0], (16, 3)), 1.3 * normal(k[1], (16, 16)),
                1.3 * normal(k[2], (16, 16)), 0.7 * normal(k[3], (16,))]
    for got, want in zip((*mlp.weights, mlp.readout), expected):
        np.testing.assert_array_equal(got, want)
    jacot = nd.JacotMLP(3, 5, 1, key=key)
    k = jax.random.split(key, 4)
    for got, want in zip((jacot.weights[0], jacot.biases[0], jacot.weights[1], jacot.biases[1]),
                         (normal(k[0], (5, 3)), normal(k[1], (5,)), normal(k[2], (1, 5)),
                          normal(k[3], (1,)))):
        np.testing.assert_array_equal(got, want)
    pair = nd.TwoLayer(3, 6, alpha=2.0, sigma=0.5, symmetric=True, key=key)
    k = jax.random.split(key, 2)
    theta, u = 0.5 * normal(k[0], (3, 3)), 0.5 * normal(k[1], (3,))
    np.testing.assert_array_equal(pair.theta, np.concatenate([theta, theta]))
    np.testing.assert_array_equal(pair.u, np.concatenate([u, -u]))
    data = nd.sphere_data(5, 4, key=3)
    k = jax.random.split(jax.random.key(3))
    X = normal(k[0], (5, 4))
    np.testing.assert_array_equal(data.X, X / jax.numpy.linalg.norm(X, axis=1, keepdims=True))
    np.testing.assert_array_equal(data.y, normal(k[1], (5,)))
    # a matrix above SMALL_DRAW entries is drawn at its size; under vmap (traced keys)
    wide = nd.MLP(3, 130, 2, sw=1.3, key=key)
    k = jax.random.split(key, 3)
    np.testing.assert_array_equal(wide.weights[1], 1.3 * normal(k[1], (130, 130)))
    np.testing.assert_array_equal(wide.readout, normal(k[2], (130,)))
    keys = jax.random.split(key, 2)
    batched = jax.vmap(lambda q: nd.MLP(3, 16, 3, sw=1.3, sa=0.7, key=q).weights)(keys)
    for i in range(2):
        for got, want in zip(batched, nd.MLP(3, 16, 3, sw=1.3, sa=0.7, key=keys[i]).weights):
            np.testing.assert_array_equal(got[i], want)
    inside_jit = jax.jit(lambda: nd.MLP(3, 16, 3, sw=1.3, sa=0.7, key=key).weights)()  # key constant
    for got, want in zip(inside_jit, mlp.weights):
        np.testing.assert_array_equal(got, want)


def test_small_networks_share_one_compiled_sampler():
    """Width sweeps of small networks compile the sampler once per number of arrays."""
    from nthdyn._network._base import _standard_normal

    nd.MLP(3, 4, 2, key=0)
    before = _standard_normal._cache_size()
    for width in (8, 16, 32, 64):
        nd.MLP(3, width, 2, key=width)
    assert _standard_normal._cache_size() == before
