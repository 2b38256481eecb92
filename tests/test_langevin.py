"""The noisy (Langevin) gradient flow d theta = -c grad phi dt + sqrt(2 tau) dW: its
stationary law, its strong order, and its keys (paper 002 Section V).

Compile-bound like the rest of the suite, so the tests share compiled programs: every
solve runs on [0, 1] with the Brownian resolution TOL; one ensemble of 400 members at
the finest step serves both the stationary law and the finest point of the strong-order
fit; the reproducibility test reuses a compiled solve of the strong-order test; every
Brownian path the tests draw themselves comes from one jitted function."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nthdyn as nd
from _models import sphere

D, M, N = 2, 4, 3
X = sphere(N, D, 3)
Y = np.array([0.4, -0.2, 0.3])
LAMBDA, TAU = 5.0, 0.1
TOL = 2.0**-12              # brownian_tol of every solve (all on [0, 1])
FINE = 2**13                # the grid on which tests evaluate Brownian paths
STEPS = 2.0 ** -np.arange(5, 8)   # the strong-order steps; the ensemble runs the finest
MEMBERS = 400


def quadratic_problem(key=0, **kwargs):
    """Random features with weight decay on u, on t in [0, 1]: phi is quadratic in u,
    phi = 1/(2n) |Phi u - y|^2 + lambda/(2m) |u|^2 with Phi = (alpha/m) tanh(X theta^T)."""
    net = nd.TwoLayer(D, M, alpha=1.0, activation="tanh", train="readout", key=key)
    return nd.GradientFlowProblem(net, (X, Y), (0.0, 1.0), weight_decay=(0.0, LAMBDA),
                                  time_scale="mean_field", temperature=TAU, **kwargs)


def drift_matrix(net, xp=jnp):
    """`A = c H` and the minimizer `mu` of phi, with `c = m`: d u = -A (u - mu) dt + ...
    Here the eigenvalues of A lie in [lambda, 1.1 lambda] = [5, 5.5]."""
    phi = (net.alpha / net.width) * xp.tanh(X @ xp.asarray(net.theta).T)
    H = phi.T @ phi / N + (LAMBDA / net.width) * xp.eye(net.width)
    return net.width * H, xp.linalg.solve(H, phi.T @ Y / N)


def euler_covariance(A, h):
    """The stationary covariance of Euler-Maruyama with step h on du = -A (u - mu) dt +
    sqrt(2 tau) dW: Sigma = (1 - hA) Sigma (1 - hA) + 2 tau h, i.e. tau (A - h A^2 / 2)^-1
    (the Ornstein-Uhlenbeck law tau A^-1 up to O(h))."""
    return TAU * jnp.linalg.inv(A - 0.5 * h * A @ A)


def final_u(problem):
    """One member: the final u, and u whitened by the stationary law N(mu, Sigma) of the
    Euler-Maruyama chain (N(0, I) if the solver and the noise are right)."""
    u = nd.solve(problem, nd.Euler(), dt0=STEPS[-1], saveat=[1.0], brownian_tol=TOL,
                 throw=False).network.u
    A, mu = drift_matrix(problem.network)
    chol = jnp.linalg.cholesky(euler_covariance(A, STEPS[-1]))
    z = jax.scipy.linalg.solve_triangular(chol, u - mu, lower=True)
    return {"u": (("component",), u), "z": (("component",), z)}


@pytest.fixture(scope="module")
def ensemble():
    """400 members (each its own network and noise key), solved at the finest step."""
    ensemble = nd.EnsembleProblem(quadratic_problem(), seeds=range(MEMBERS), output=final_u)
    return ensemble, nd.solve(ensemble)


def test_langevin_reaches_the_ornstein_uhlenbeck_law(ensemble):
    """Over the 400 members the whitened final u has mean 0 and variance 1 within 3
    standard errors (1600 values: standard errors 0.025 of the mean, 0.035 of the
    variance): the stationary mean mu and covariance of the scheme, which is the
    Ornstein-Uhlenbeck law tau A^-1 (variance tau / lambda along directions the data do
    not see) up to Euler's O(h) bias, here under 2.2%. The start u(0) ~ N(0, 1) is
    forgotten to (1 - h lambda)^128 = e^-5.1."""
    problem, ds = ensemble
    z = np.ravel(ds.z.values)
    assert z.size == 4 * MEMBERS and np.all(np.isfinite(z))
    assert abs(z.mean()) < 3 / np.sqrt(z.size)
    assert abs(z.var(ddof=1) - 1.0) < 3 * np.sqrt(2 / (z.size - 1))
    A, _ = drift_matrix(problem.member(seed=0).network, np)
    ou = np.linalg.eigvalsh(TAU * np.linalg.inv(A))
    assert np.all(np.abs(ou / np.linalg.eigvalsh(euler_covariance(A, STEPS[-1])) - 1.0) < 0.022)
    assert np.isclose(ou.max(), TAU / LAMBDA)


@eqx.filter_jit
def brownian_paths(keys, shape):
    """W(s) on the grid s = k / FINE of [0, 1], for each key: the VirtualBrownianTree a
    solve on [0, 1] with brownian_tol=TOL draws (same key, shape and tolerance)."""
    s = jnp.linspace(0.0, 1.0, FINE + 1)

    def path(key):
        tree = diffrax.VirtualBrownianTree(0.0, 1.0, tol=TOL, shape=shape, key=key)
        return jax.vmap(lambda t: tree.evaluate(0.0, t))(s)

    return jax.vmap(path)(keys)


def paths(problems):
    """`brownian_paths` of the problems' keys: `(problems, FINE + 1, m)` (six problems at a
    time: one compilation)."""
    params = eqx.partition(problems[0].network, problems[0].network.trainable_filter())[0]
    shape = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
    keys = jnp.stack([p.brownian_key() for p in problems])
    return np.asarray(brownian_paths(keys, shape).u)


def exact_final_u(problem, W):
    """u(1) = mu + e^{-A}(u0 - mu) + sqrt(2 tau) [W(1) - int_0^1 A e^{-A(1-s)} W(s) ds]
    (Ito's formula and integration by parts), the integral by the trapezoid rule on the
    Brownian path W on the grid of `brownian_paths` (NumPy, on the host)."""
    A, mu = drift_matrix(problem.network, np)
    u0 = np.asarray(problem.network.u)
    a, V = np.linalg.eigh(A)
    s = np.linspace(0.0, 1.0, FINE + 1)
    integrand = (W @ V) * (a * np.exp(-a * (1.0 - s[:, None])))     # eigenbasis
    integral = V @ np.trapezoid(integrand, s, axis=0)
    decay = V @ (np.exp(-a) * (V.T @ (u0 - mu)))
    return mu + decay + np.sqrt(2 * TAU) * (W[-1] - integral)


def test_euler_strong_order_one_on_additive_noise(ensemble):
    """Euler-Maruyama on the linear SDE with additive noise has strong order 1: the RMS
    error of u(1) over the Brownian paths of 6 ensemble members, against the exact
    solution on the same path, falls with a fitted slope within 0.2 of 1 in the step
    (2^-5, 2^-6 and, from the ensemble's vmapped solve, 2^-7; h |A| = 0.16 ... 0.04)."""
    problem, ds = ensemble
    members = [problem.member(seed=s) for s in range(6)]
    exact = np.stack([exact_final_u(p, W) for p, W in zip(members, paths(members))])
    finals = [np.stack([nd.solve(p, nd.Euler(), dt0=h, saveat=[1.0], brownian_tol=TOL).network.u
                        for p in members]) for h in STEPS[:-1]]
    finals.append(ds.u.values[:6])
    errors = [np.sqrt(np.mean(np.sum((final - exact) ** 2, axis=1))) for final in finals]
    slope = np.polyfit(np.log(STEPS), np.log(errors), 1)[0]
    assert 0.8 < slope < 1.2, (slope, errors)


def test_noise_is_reproducible_and_independent():
    """The same problem draws the same path; another noise_key another; ensemble members
    (their own network keys) have distinct keys and uncorrelated paths: for each of the 15
    pairs of 6 members, the correlation of their 8192 increments (4 components, 2048 steps
    of two tree resolutions each) is within 4/sqrt(8192) of 0."""
    problem = quadratic_problem(noise_key=3)
    options = {"dt0": STEPS[0], "saveat": [1.0], "brownian_tol": TOL}  # as in the strong order
    one = nd.solve(problem, **options)
    two = nd.solve(problem, **options)
    other = nd.solve(nd.remake(problem, noise_key=4), **options)
    assert np.array_equal(one.network.u, two.network.u)
    assert np.max(np.abs(one.network.u - other.network.u)) > 1e-3
    ensemble = nd.EnsembleProblem(quadratic_problem(), seeds=range(6))
    members = [ensemble.member(seed=s) for s in range(6)]
    keys = {tuple(np.asarray(jax.random.key_data(p.brownian_key())).tolist()) for p in members}
    assert len(keys) == 6
    increments = [np.ravel(np.diff(W[::4], axis=0)) for W in paths(members)]
    corr = np.corrcoef(increments)[np.triu_indices(6, 1)]
    assert np.all(np.abs(corr) < 4 / np.sqrt(increments[0].size)), corr
