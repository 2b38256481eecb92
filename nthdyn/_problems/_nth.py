"""The truncated Neural Tangent Hierarchy, Huang & Yau eq. (15) and (22).

With residual `r = f~ - y`,

    d f~/dt      = -1/n K~(2) r,
    d K~(s)/dt   = -1/n K~(s+1)[..., r]      for 2 <= s <= p - 1,
    d K~(p)/dt   = 0,

started from the network's outputs and kernels at `t = 0`. Test points `x` enter
as an extra first slot (eq. (22)): `f~_x` and `K~(s)(x, X, ..., X)` follow the
same equations. Once the kernels `K(2..p)` at `t = 0` exist, the ODE's cost does
not depend on the width.

For `p = 3`, `K~(2)(t) = K(2) - 1/n K(3)[R(t)]` with `R = int_0^t r`, so the
system reduces to `(r, R)` (Section 4, item 3; the printed formula has lost a
sign and a factor `1/n`):

    dr/dt = -1/n K(2) r + 1/n^2 K(3)[r, R],     dR/dt = r,

where `K(3)[r, R]_a = sum_{c,b} K(3)(a, c, b) r_c R_b`.

For `p = 4` the frozen `K(4)` gives `K~(3)(t) = K(3) - 1/n K(4)[R]` and so
`K~(2)(t) = K(2) - 1/n K(3)[R] + 1/n^2 M(t)` with `dM/dt = K(4)[r, R]` (slot 3
contracted with `r`, slot 4 with `R`): the state `(r, R, M)` of `n^2 + 2n` numbers,
and `K(4)[r, R]` is one matrix-free `hierarchy_contraction` of the network at
`t = 0` per right-hand side (about 9 K2 evaluations), so the `n^4` tensor is never
formed. Exact for the order-4 truncation, not an approximation; it is what lets
order 4 run at `n = 128` (2.1 GB for the tensor) and beyond.
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._data import TrainingSet
from .._kernels import (
    MAX_KERNEL_BYTES,
    base_kernel,
    check_kernel_size,
    check_order,
    contract_last,
    derived_contraction,
    derived_kernel,
    factoring_chosen,
    kernel_bytes,
)
from .._lazy import diffrax
from .._network import AbstractNetwork
from .._solve import AbstractODE, check_span, half_mean_square, is_traced, observed
from ._base import AbstractProblem, check_common
from ._flow import check_solver
from ._regression import Eigendecomposition, KernelClosedForm

#: The automatic solver choice uses an implicit method only for states this small.
IMPLICIT_MAX_STATE = 1000
#: A user's implicit solver is refused above this state size (a 10^4 x 10^4 Jacobian is 0.8 GB).
IMPLICIT_MAX_DENSE = 10_000
#: ... and only when the linear part is this stiff: lambda_max(K2) (t1 - t0) / n.
STIFFNESS_THRESHOLD = 1e4


class HierarchyKernels(eqx.Module):
    """The network's outputs and kernels `K(2), ..., K(p)` at `t = 0`, on the training
    inputs and (with test points) with test points in the first slot: what starts the
    truncated hierarchy. Kernels up to order `p` serve every order `<= p`
    (`truncate`), so a sweep over orders computes them once:

        kernels = nd.initial_kernels(nd.remake(nth, order=4))
        sol3 = nd.solve(nd.remake(nth, order=3), kernels=kernels)
    """

    f: Float[Array, " n"]
    K: tuple[Array, ...]
    f_test: Float[Array, " t"] | None
    K_test: tuple[Array, ...] | None

    @property
    def order(self) -> int:
        return len(self.K) + 1

    def truncate(self, order: int) -> HierarchyKernels:
        """The kernels of orders `2..order`."""
        if order > self.order:
            raise ValueError(f"kernels=...: these kernels go up to order {self.order}; the "
                             f"problem needs order {order}. Compute them with "
                             f"initial_kernels(remake(problem, order={order})).")
        return HierarchyKernels(self.f, self.K[:order - 1], self.f_test,
                                None if self.K_test is None else self.K_test[:order - 1])


def initial_kernels(problem: NTHProblem, *, order: int | None = None,
                    max_bytes: int = MAX_KERNEL_BYTES,
                    factored: bool | None = None) -> HierarchyKernels:
    """The outputs and kernels `K(2..p)` of `problem`'s network at `t = 0` (eq. (15),
    and (22) with test points in the first slot); `order` overrides the problem's
    `p` (kernels of a higher order serve every lower order); `factored` as in
    `hierarchy_kernel` (rank-one directions; `None` chooses by shape).

    Cost: that of `hierarchy_kernel` for each order `2..p`, i.e. dominated by `K(p)`:
    about `(3 n)^(p-2)` times one K2; one compiled program per order (and slot)."""
    if not isinstance(problem, NTHProblem):
        raise TypeError(f"problem={type(problem).__name__}: initial_kernels takes an "
                        "nthdyn.NTHProblem (the kernels K(2..p) start the hierarchy).")
    net, X, test = problem.network, problem.data.X, problem.test
    p = problem.order if order is None else check_order(net, order)
    instead = "a lower order, or reduced=True at order 4 (matrix-free)"
    check_kernel_size(f"K({p})", X.shape[0], X.shape[0], p, max_bytes, instead)
    if test is not None:
        check_kernel_size(f"K({p}) with test points", len(test), X.shape[0], p, max_bytes, instead)
    base = base_kernel(net, "auto")
    factored = factoring_chosen(net, base, (p - 2) * X.shape[0], factored)
    K, K_test = _kernels(net, X, test, p, base, factored)
    # the outputs outside the kernels' program: inside it, XLA shares the kernels'
    # forward passes and f(0) differs from the exact flow's in the last bit
    return HierarchyKernels(net(X), K, None if test is None else net(test), K_test)


def _kernels(network, X, test, order, base, factored):
    """`K(2..order)` on `X` (and with `test` in the first slot), each by its own compiled
    program (`derived_kernel`'s, as `hierarchy_kernel`'s): `K(r)` is the same to the bit
    whichever order asked for it, which one program for all orders does not promise
    (XLA fuses each order's arithmetic with the others' differently)."""
    K = tuple(derived_kernel(network, X, X, r, base, True, False, factored)
              for r in range(2, order + 1))
    if test is None:
        return K, None
    return K, tuple(derived_kernel(network, test, X, r, base, False, False, factored)
                    for r in range(2, order + 1))


class Hierarchy(AbstractODE):
    """Right-hand side of eq. (15) and (22); `top`, `top_test` are the frozen `K(p)`.
    The state is `{"f", "K": (K~2..K~(p-1)), "fx", "Kx"}` (empty groups left out:
    diffrax's buffers must be arrays)."""

    y: Array
    top: Array
    top_test: Array | None
    solver: diffrax.AbstractSolver
    info: tuple[tuple[str, int], ...] = eqx.field(static=True)

    def record(self):
        return dict(self.info)

    def field(self, t, state, args):
        n = self.y.shape[0]
        r = state["f"] - self.y
        kernels = state.get("K", ()) + (self.top,)
        out = {"f": -kernels[0] @ r / n}
        if "K" in state:
            out["K"] = tuple(-contract_last(k, r) / n for k in kernels[1:])
        if "fx" in state:
            kx = state.get("Kx", ()) + (self.top_test,)
            out["fx"] = -kx[0] @ r / n
            if "Kx" in state:
                out["Kx"] = tuple(-contract_last(k, r) / n for k in kx[1:])
        return out

    def observe(self, t, state, args):
        rates = self.field(t, state, args)
        return observed(f=state["f"], dfdt=rates["f"], loss=half_mean_square(state["f"], self.y),
                        ntk=(state.get("K", ()) + (self.top,))[0], f_test=state.get("fx"),
                        dfdt_test=rates.get("fx"))


def _reduced_velocity(K2, K3, r, R):
    n = r.shape[0]
    return -K2 @ r / n + jnp.einsum("acb,c,b->a", K3, r, R) / n**2


class ReducedHierarchy(AbstractODE):
    """The p = 3 system in `(r, R)` (module docstring)."""

    y: Array
    K2: Array
    K3: Array
    Kx2: Array | None
    Kx3: Array | None
    solver: diffrax.AbstractSolver
    info: tuple[tuple[str, int], ...] = eqx.field(static=True)

    def record(self):
        return dict(self.info)

    def field(self, t, state, args):
        r, R = state["r"], state["R"]
        out = {"r": _reduced_velocity(self.K2, self.K3, r, R), "R": r}
        if "fx" in state:
            out["fx"] = _reduced_velocity(self.Kx2, self.Kx3, r, R)
        return out

    def observe(self, t, state, args):
        rates = self.field(t, state, args)
        n = state["r"].shape[0]
        f = state["r"] + self.y
        return observed(f=f, dfdt=rates["r"], loss=half_mean_square(f, self.y),
                        ntk=self.K2 - contract_last(self.K3, state["R"]) / n,
                        f_test=state.get("fx"), dfdt_test=rates.get("fx"))


class ReducedFourthOrder(AbstractODE):
    """The p = 4 system in `(r, R, M)` (module docstring): `K(4)[r, R]` is contracted
    through the network at `t = 0`, matrix-free. Test points (eq. (22)) carry their own
    `M_x` (`K(4)(x, ...)[r, R]`)."""

    network: AbstractNetwork
    X: Array
    X_test: Array | None
    y: Array
    K: tuple[Array, Array]
    K_test: tuple[Array, Array] | None
    solver: diffrax.AbstractSolver
    info: tuple[tuple[str, int], ...] = eqx.field(static=True)

    def record(self):
        return dict(self.info)

    def _kernel(self, K2, K3, M, R):
        n = R.shape[0]
        return K2 - contract_last(K3, R) / n + M / n**2

    def _K4(self, X_first, r, R):
        base = base_kernel(self.network, "auto")
        return derived_contraction(self.network, self.X if X_first is None else X_first, self.X,
                                   (r, R), base, X_first is None)

    def field(self, t, state, args):
        r, R = state["r"], state["R"]
        n = r.shape[0]
        out = {"r": -self._kernel(*self.K, state["M"], R) @ r / n, "R": r,
               "M": self._K4(None, r, R)}
        if "fx" in state:
            out["fx"] = -self._kernel(*self.K_test, state["Mx"], R) @ r / n
            out["Mx"] = self._K4(self.X_test, r, R)
        return out

    def observe(self, t, state, args):
        rates = self.field(t, state, args)
        f = state["r"] + self.y
        return observed(f=f, dfdt=rates["r"], loss=half_mean_square(f, self.y),
                        ntk=self._kernel(*self.K, state["M"], state["R"]),
                        f_test=state.get("fx"), dfdt_test=rates.get("fx"))


def choose_solver(state_size: int, stiffness: float) -> diffrax.AbstractSolver:
    """The automatic rule: `Kvaerno5` (implicit, L-stable) when the state is small
    enough for a dense Jacobian (`<= IMPLICIT_MAX_STATE`) and the linear part is
    stiff (`lambda_max(K2) (t1 - t0) / n > STIFFNESS_THRESHOLD`); `Tsit5` otherwise."""
    if state_size <= IMPLICIT_MAX_STATE and stiffness > STIFFNESS_THRESHOLD:
        return diffrax.Kvaerno5()
    return diffrax.Tsit5()


class NTHProblem(AbstractProblem):
    """The p-level truncated hierarchy, eq. (15), for `network` and `data`.

    **Arguments:**

    - `network`: the network at `t = 0` (its kernels start the hierarchy).
    - `data`: a `TrainingSet` (or an `(X, y)` pair).
    - `order`: the truncation level `p >= 2`; `K~(p)` is frozen. `p = 2` is kernel
      regression with the finite-width NTK; `p >= 3` needs a smooth activation.
    - `tspan`: `(t0, t1)`.
    - `test`: optional test inputs, evolved by eq. (22).

    **Solve:** `solve(problem, solver=None, kernels=None, reduced=None,
    max_bytes=2 GiB, **options)`:

    - `solver`: any adaptive diffrax solver; `None` chooses: at `p = 2` the closed
      form, `Eigendecomposition()` (kernel regression with the frozen `K2`, as
      `KernelRegressionProblem`; an ODE solver integrates eq. (15) instead), above it
      by `choose_solver` (from the stiffness of `K2`; inside `jit`/`vmap`, where `K2`
      is not known on the host, `Tsit5`).
    - `kernels`: precomputed `initial_kernels` (of this order or higher) instead of
      computing them.
    - `reduced`: for `order=3`, solve the `(r, R)` system (the default) instead of
      evolving `K~(2)`; for `order=4`, the matrix-free `(r, R, M)` system, which never
      forms `K(4)` (the default where `K(4)` would exceed `max_bytes`); both agree
      with the full systems (tested).
    - `max_bytes`: the cap on each kernel tensor.

    The tolerances apply to the outputs and kernels (the state). The solution's
    `ntk` is `K~(2)(t)`; its `network` is `None` (no parameters move).
    """

    network: AbstractNetwork
    data: TrainingSet
    order: int = eqx.field(static=True)
    tspan: tuple[float, float] = eqx.field(static=True)
    test: Float[Array, "t d"] | None = None

    solve_options: ClassVar[dict[str, Any]] = {
        "kernels": None, "reduced": None, "max_bytes": MAX_KERNEL_BYTES}

    def __init__(self, network, data, order, tspan, *, test=None):
        self.network, self.data, self.test = check_common(network, data, test)
        self.order = check_order(self.network, order)
        self.tspan = check_span(tspan)

    @property
    def span(self):
        return self.tspan

    def dynamics(self, solver, settings):
        p, y = self.order, self.data.y
        reduced = settings.extra["reduced"]
        if reduced not in (None, True, False):
            raise TypeError(f"reduced={reduced!r}: pass None (automatic), True (the (r, R) "
                            "system of order 3) or False.")
        if reduced is None:  # order 4: matrix-free only where the tensor K(4) does not fit
            n_first = self.data.n + (0 if self.test is None else len(self.test))
            reduced = p == 3 or (p == 4 and kernel_bytes(n_first, self.data.n, 4)
                                 > settings.extra["max_bytes"])
        if reduced and p not in (3, 4):
            raise ValueError(f"reduced=True is the (r, R) system of order 3 or the matrix-free "
                             f"(r, R, M) system of order 4; this problem has order={p}.")
        kernels = settings.extra["kernels"]
        if kernels is None:
            kernels = initial_kernels(self, order=3 if reduced else p,
                                      max_bytes=settings.extra["max_bytes"])
        else:
            kernels = self._check_kernels(kernels)
        kernels = kernels.truncate(3 if reduced else p)
        f0, K = kernels.f, kernels.K
        testing = kernels.f_test is not None
        if p == 2 and (solver is None or isinstance(solver, Eigendecomposition)):
            # eq. (15) at p = 2 is kernel regression with the frozen K2, eq. (8): exact
            # through K2's eigendecomposition, as KernelRegressionProblem solves it
            return KernelClosedForm(K=K[0], K_test=kernels.K_test[0] if testing else None, y=y,
                                    f0=f0, f0_test=kernels.f_test, t0=self.tspan[0],
                                    save_ntk=True, info=(("order", 2), ("reduced", 0))), None
        if reduced:
            state = {"r": f0 - y, "R": jnp.zeros_like(f0)}
            if p == 4:
                state["M"] = jnp.zeros_like(K[0])
        else:  # empty groups are left out: diffrax's buffers must be arrays (p = 2)
            state = {"f": f0, "K": tuple(K[:-1])} if p > 2 else {"f": f0}
        if testing:
            state["fx"] = kernels.f_test
            if reduced and p == 4:
                state["Mx"] = jnp.zeros_like(kernels.K_test[0])
            if p > 2 and not reduced:
                state["Kx"] = tuple(kernels.K_test[:-1])
        size = sum(leaf.size for leaf in jax.tree_util.tree_leaves(state))
        solver = self._solver(solver, K[0], size)
        info = (("order", p), ("reduced", int(reduced)), ("state_size", int(size)))
        if reduced and p == 4:
            return ReducedFourthOrder(
                network=self.network, X=self.data.X, X_test=self.test, y=y, K=tuple(K),
                K_test=tuple(kernels.K_test) if testing else None, solver=solver,
                info=info), state
        if reduced:
            Kx2, Kx3 = kernels.K_test if testing else (None, None)
            return ReducedHierarchy(y=y, K2=K[0], K3=K[1], Kx2=Kx2, Kx3=Kx3, solver=solver,
                                    info=info), state
        top_test = kernels.K_test[-1] if testing else None
        return Hierarchy(y=y, top=K[-1], top_test=top_test, solver=solver, info=info), state

    def _solver(self, solver: Any, K2: Array, size: int) -> diffrax.AbstractSolver:
        """The user's solver, checked; or the automatic choice from the stiffness of K2
        (Tsit5 inside jit/vmap, where K2's values are not known on the host)."""
        if isinstance(solver, Eigendecomposition):
            raise TypeError(f"solver=Eigendecomposition(): the closed form solves order 2 only; "
                            f"this problem has order={self.order}. Pass None (automatic) or an "
                            "adaptive diffrax solver such as nthdyn.Tsit5().")
        if solver is not None:
            return check_solver(solver, size, limit=IMPLICIT_MAX_DENSE, state="hierarchy's state",
                                default=diffrax.Tsit5())
        if is_traced(K2):
            return diffrax.Tsit5()
        t0, t1 = self.tspan
        stiffness = float(np.linalg.eigvalsh(np.asarray(K2))[-1]) * (t1 - t0) / self.data.n
        return choose_solver(size, stiffness)

    def _check_kernels(self, kernels: Any) -> HierarchyKernels:
        if not isinstance(kernels, HierarchyKernels):
            raise TypeError(f"kernels={type(kernels).__name__}: pass the result of "
                            "nthdyn.initial_kernels(problem) (or None to compute them).")
        n = self.data.n
        if kernels.f.shape[-1:] != (n,) or kernels.K[0].shape[-2:] != (n, n):
            raise ValueError(f"kernels=...: they are for {kernels.f.shape[-1]} training points; "
                             f"this problem has n={n}.")
        if (kernels.f_test is None) != (self.test is None):
            raise ValueError("kernels=...: computed " + ("with" if self.test is None else "without")
                             + " test points, but this problem has " + ("none" if self.test is None
                             else "some") + "; compute them with initial_kernels(problem).")
        return kernels

    def failure_message(self, status, solution, settings):
        if status == "max_steps_reached":
            return (f"max_steps={settings.max_steps} steps were not enough for the order-"
                    f"{self.order} hierarchy to reach t={settings.t1}: raise max_steps, loosen "
                    f"rtol/atol (now {settings.rtol:g}/{settings.atol:g}), or try a stiff solver "
                    "such as nthdyn.Kvaerno5().")
        if status == "nonfinite":
            return ("the truncated hierarchy produced non-finite values: the truncation is not "
                    "valid this far (Theorem 2.6 needs t << sqrt(m)); shorten tspan or raise order.")
        return super().failure_message(status, solution, settings)

    def labels(self):
        eq = "Huang & Yau eq. (15)"
        return {"f": {"long_name": "output f~ of the truncated NTH", "equation": eq},
                "dfdt": {"long_name": "time derivative of f~, -1/n K~2 (f~ - y)", "equation": eq},
                "ntk": {"long_name": "kernel K~2(x_a, x_b) of the truncated NTH", "equation": eq},
                "f_test": {"long_name": "output f~ on the test inputs",
                           "equation": "Huang & Yau eq. (22)"},
                "dfdt_test": {"long_name": "time derivative of f~ on the test inputs",
                              "equation": "Huang & Yau eq. (22)"}}

    def title(self):
        return f"nthdyn order-{self.order} truncated NTH solution"
