"""Exact training by gradient flow, Huang & Yau eq. (3)-(5).

`d theta/dt = -grad L(theta)`, integrated by diffrax with adaptive steps. Only
observables are saved (outputs, their time derivative, the loss, optionally the
NTK), never the parameter trajectory: a width-4096 network has 10^7 parameters.

Options of paper 002 (see `_objective.py`): weight decay `R` (eq. (2)), the time
scale `c` (`d theta/dt = -c grad phi`; `c = m` is the mean-field time of eq. (20)),
centering `f - f(theta_0)` (lazy training), and noise: with temperature `tau > 0`
the flow is the Langevin SDE `d theta = -c grad phi dt + sqrt(2 tau) dW`, solved by
a diffrax SDE solver with fixed steps on a `VirtualBrownianTree` keyed by the
problem (the same single diffrax call, with a `MultiTerm`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import positive_float
from .._data import TrainingSet
from .._kernels import ntk_traced
from .._lazy import diffrax, lx
from .._network import AbstractLayeredNetwork, AbstractNetwork, as_key, parameter_count, trainable
from .._solve import AbstractODE, check_span, half_mean_square, observed
from ._base import AbstractProblem, check_common
from ._objective import Objective, check_time_scale, check_weight_decay
from ._regimes import has_particles, particles, relative_movement

#: Above this many parameters an implicit solver's dense Jacobian would not fit.
IMPLICIT_MAX_PARAMETERS = 20_000


def network_observables(params, static, X, y, X_test, velocity, save_ntk, *, offset=None,
                        offset_test=None, regime=None):
    """Outputs, loss, NTK, and the outputs' derivative along `velocity` (a jvp;
    none when `velocity` is None): the observables of a network's parameters.
    `offset`, `offset_test`: subtracted from the outputs (centering, `f - f(theta_0)`).
    `regime`: a `Regime` reference, to also save the regime observables."""

    def outputs(p):
        net = eqx.combine(p, static)
        return net(X), (None if X_test is None else net(X_test))

    if velocity is None:
        (f, f_test), (dfdt, dfdt_test) = outputs(params), (None, None)
    else:
        (f, f_test), (dfdt, dfdt_test) = jax.jvp(outputs, (params,), (velocity,))
    if offset is not None:
        f = f - offset
        f_test = None if f_test is None else f_test - offset_test
    ntk = ntk_traced(eqx.combine(params, static), X) if save_ntk or regime is not None else None
    extra = None if regime is None else regime.observe(eqx.combine(params, static), ntk)
    return observed(f=f, dfdt=dfdt, loss=half_mean_square(f, y), ntk=ntk if save_ntk else None,
                    f_test=f_test, dfdt_test=dfdt_test, observables=extra)


class Regime(eqx.Module):
    """The reference of the regime observables (`save_regime=True`): the initial network
    and its NTK on the training set. Saves `movement` (per trained map), `ntk_change`
    and, for a network with one hidden layer, the particles `particle_u`,
    `particle_theta` (see `_regimes.py`)."""

    initial: AbstractNetwork
    ntk0: Array

    @classmethod
    def of(cls, network: AbstractNetwork, X: Array) -> Regime:
        return cls(network, ntk_traced(network, X))

    def observe(self, network: AbstractNetwork, ntk: Array) -> dict[str, Array]:
        change = jnp.sqrt(jnp.sum((ntk - self.ntk0) ** 2) / jnp.sum(self.ntk0**2))
        out = {"movement": relative_movement(network, self.initial), "ntk_change": change}
        if has_particles(network):
            out["particle_u"], out["particle_theta"] = particles(network)
        return out


def loss_gradient(params, static, X, y):
    """`grad L(theta)`, `L = 1/(2n) sum_b (f(x_b) - y_b)^2`."""
    return jax.grad(lambda p: half_mean_square(eqx.combine(p, static)(X), y))(params)


def check_sde_solver(solver: Any, temperature: float) -> diffrax.AbstractSolver:
    """A diffrax SDE solver instance for the Langevin flow (`Euler()` by default)."""
    if solver is None:
        return diffrax.Euler()
    if isinstance(solver, type):
        raise TypeError(f"solver={solver.__name__}: pass an instance, e.g. {solver.__name__}().")
    if not isinstance(solver, (diffrax.AbstractItoSolver, diffrax.AbstractStratonovichSolver)) \
            or isinstance(solver, diffrax.AbstractFosterLangevinSRK):
        raise TypeError(
            f"solver={type(solver).__name__}(): with temperature={temperature} the flow is an "
            "SDE, d theta = -c grad phi dt + sqrt(2 tau) dW, and this is an ODE solver (its "
            "order and error control do not hold with noise). Pass an SDE solver: "
            "diffrax.Euler() (Euler-Maruyama, the default), diffrax.Heun(), diffrax.SRA1() or "
            "diffrax.ShARK(), with a fixed step dt0=..."
        )
    return solver


def check_solver(solver: Any, state_size: int, *, limit: int, state: str,
                 default: diffrax.AbstractSolver) -> diffrax.AbstractSolver:
    """An adaptive diffrax solver instance (`default` for None); an implicit one only
    if the dense Jacobian of a state of `state_size` entries is affordable."""
    if solver is None:
        return default
    if isinstance(solver, type):
        raise TypeError(f"solver={solver.__name__}: pass an instance, e.g. {solver.__name__}().")
    if not isinstance(solver, diffrax.AbstractAdaptiveSolver):
        raise TypeError(
            f"solver={solver!r}: pass an adaptive diffrax solver such as nthdyn.Tsit5(), "
            "nthdyn.Dopri8() or nthdyn.Kvaerno5()."
        )
    if isinstance(solver, diffrax.AbstractImplicitSolver) and state_size > limit:
        raise ValueError(
            f"solver={type(solver).__name__}() is implicit: its Newton step builds a dense "
            f"{state_size} x {state_size} Jacobian of the {state} (at most {limit} entries are "
            "allowed). Use an explicit solver (Tsit5, Dopri8); implicit solvers fit small "
            "stiff systems such as the low orders of the hierarchy."
        )
    return solver


def fixed_grid(settings: Any) -> np.ndarray:
    """`t0, t0 + dt0, ..., t1` with the save times merged in (grid points closer than
    `1e-6 dt0` to a save time are dropped, so that no step is a rounding error)."""
    if isinstance(settings.ts, jax.core.Tracer):
        raise ValueError("saveat: the noisy flow steps on a fixed grid built on the host; pass "
                         "the save times as a NumPy array or list, not a traced array.")
    t0, t1, dt = settings.t0, settings.t1, settings.dt0
    count = int(np.ceil((t1 - t0) / dt - 1e-9))
    grid = np.minimum(t0 + dt * np.arange(count + 1), t1)
    saves = np.asarray(settings.ts, dtype=float)
    near = np.min(np.abs(grid[:, None] - saves[None, :]), axis=1) < 1e-6 * dt
    grid = np.union1d(grid[~near], saves)
    return np.union1d(grid, [t0, t1])


class GradientFlow(AbstractODE):
    """The gradient flow of a network's parameters, eq. (3)-(5), with the options of
    paper 002: `d theta = -c grad phi dt (+ sqrt(2 tau) dW)`. With centering the
    labels are shifted by the initial outputs: `L(f - f0, y) = L(f, y + f0)`."""

    static: Any
    X: Array
    y: Array
    X_test: Array | None
    solver: diffrax.AbstractSolver
    save_ntk: bool = eqx.field(static=True)
    objective: Objective | None = None
    offset: Array | None = None
    offset_test: Array | None = None
    regime: Regime | None = None
    temperature: float = eqx.field(static=True, default=0.0)
    noise_key: Any = None
    brownian_tol: float | None = eqx.field(static=True, default=None)
    factored: bool = eqx.field(static=True, default=False)

    @property
    def method(self):
        solver = self.solver.method if self.factored else self.solver
        return type(solver).__name__

    def record(self):
        return {"factored": int(self.factored)}

    def speeds(self, network: AbstractLayeredNetwork) -> tuple[Any, ...]:
        """The time scale `c_k` of each trained map `k` of `network`."""
        if self.objective is None:
            return (1.0,) * len(network.trained_maps())
        return tuple(self.objective.scales[k] for k in network.trained_maps())

    def labels(self):
        """The labels the residual is taken against (`y + f(theta_0)` when centered)."""
        return self.y if self.offset is None else self.y + self.offset

    def field(self, t, params, args):
        if self.objective is None:
            return jax.tree_util.tree_map(jnp.negative,
                                          loss_gradient(params, self.static, self.X, self.y))
        return self.objective.velocity(params, self.static, self.X, self.labels())

    def observe(self, t, params, args):
        return network_observables(params, self.static, self.X, self.y, self.X_test,
                                   self.field(t, params, args), self.save_ntk,
                                   offset=self.offset, offset_test=self.offset_test,
                                   regime=self.regime)

    def final(self, params):
        return eqx.combine(params, self.static)

    def terms(self, t0, t1, y0):
        """`dy = field dt`, plus `sqrt(2 tau) dW` on every trained parameter when
        `tau > 0` (additive noise, a `VirtualBrownianTree` of tolerance
        `brownian_tol`, so the path is a function of `noise_key` alone)."""
        if self.factored:
            from ._factored import FactoredStages  # subclasses diffrax's: imported here

            return FactoredStages(self)
        drift = diffrax.ODETerm(self.field)
        if not self.temperature:
            return drift
        shape = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), y0)
        area = isinstance(self.solver, diffrax.AbstractSRK) and issubclass(
            self.solver.minimal_levy_area, diffrax.AbstractSpaceTimeLevyArea)  # SRA1, ShARK, ...
        levy = diffrax.SpaceTimeLevyArea if area else diffrax.BrownianIncrement
        path = diffrax.VirtualBrownianTree(t0, t1, tol=self.brownian_tol, shape=shape,
                                           key=self.noise_key, levy_area=levy)
        scale = jnp.sqrt(2.0 * self.temperature)
        return diffrax.MultiTerm(drift, diffrax.ControlTerm(
            lambda t, y, args: lx.IdentityLinearOperator(shape) * scale, path))

    def stepping(self, settings):
        """Adaptive steps for the ODE; for the SDE the fixed grid `t0 + k dt0` with the
        save times added (`StepTo`), so that saved values are the solver's own."""
        if not self.temperature:
            return super().stepping(settings)
        return diffrax.StepTo(ts=jnp.asarray(fixed_grid(settings))), None


#: Folded into a network's key for the Brownian path when the problem has no `noise_key`.
NOISE_TAG = 0x6E6F6973  # "nois"


class GradientFlowProblem(AbstractProblem):
    """Exact training by gradient flow, Huang & Yau eq. (3)-(5):
    `d theta / dt = -grad L(theta)`, `L = 1/(2n) sum_b (f(x_b) - y_b)^2`; with the
    options of paper 002, `d theta = -c grad phi dt + sqrt(2 tau) dW`, `phi = L + R`.

    **Arguments:**

    - `network`: the network at `t = tspan[0]`.
    - `data`: a `TrainingSet` (or an `(X, y)` pair).
    - `tspan`: `(t0, t1)` with `t0 < t1`.
    - `test`: optional test inputs `(t, d)` whose outputs are tracked too.
    - `weight_decay`: `lambda >= 0`, one number or one per linear map:
      `R = 1/(2m) sum_k lambda_k ||P_k||^2` (paper 002 eq. (2); `TwoLayer`:
      `(lambda_theta, lambda_u)`), see `nthdyn._problems._objective`.
    - `time_scale`: `c > 0` in `d theta/dt = -c grad phi`, or `"mean_field"` for
      `c = m` (paper 002 eq. (20): particles move `O(1)` in time `O(1)`), or one
      `c_k` per linear map (per-layer learning rates, paper 002 eq. (11)-(13);
      `TwoLayer`: `(c_theta, c_u)`).
    - `center`: train `f(x; theta) - f(x; theta_0)` (lazy training of Chizat & Bach):
      the outputs start at zero; `sol.f` is the centered output, `sol.network` the
      network itself.
    - `temperature`: `tau >= 0`; `tau > 0` adds the noise `sqrt(2 tau) dW` (Langevin).
    - `noise_key`: the key of the Brownian path (int or JAX key). The path's key is
      `fold_in(noise_key, bits(network.key))` (either alone when the other is
      `None`; `fold_in(network.key, NOISE_TAG)` without `noise_key`), so the members
      of an ensemble, whose networks have their own keys, draw independent noise,
      and the same problem always draws the same path.

    **Solve:** `solve(problem, solver=Tsit5(), save_ntk=False, save_regime=False,
    **options)`; any adaptive diffrax solver (`Dopri8()` for tolerances near 1e-13;
    implicit solvers only for up to 20,000 parameters). `save_ntk=True` also saves
    the NTK on the training set at each save time; `save_regime=True` the regime
    observables (`movement`, `ntk_change`, the particles `particle_u`,
    `particle_theta` of a one-hidden-layer network) in `sol.observables`. The
    default norm, the Euclidean norm over all parameters, bounds the error of the
    outputs whatever the width. With `temperature > 0`: an SDE solver
    (`diffrax.Euler()` by default, `Heun()`, `SRA1()`, `ShARK()`), the fixed step
    `dt0` (required), and `brownian_tol` (default `dt0 / 8`), the resolution of the
    `VirtualBrownianTree`; pass the same `brownian_tol` to compare runs with
    different `dt0` on one path.
    """

    network: AbstractNetwork
    data: TrainingSet
    tspan: tuple[float, float] = eqx.field(static=True)
    test: Float[Array, "t d"] | None = None
    weight_decay: tuple[float, ...] | float = eqx.field(static=True, default=0.0)
    time_scale: float | str = eqx.field(static=True, default=1.0)
    center: bool = eqx.field(static=True, default=False)
    temperature: float = eqx.field(static=True, default=0.0)
    noise_key: Any = None

    solve_options: ClassVar[dict[str, Any]] = {"save_ntk": False, "save_regime": False,
                                               "brownian_tol": None, "factored": None}

    def __init__(self, network, data, tspan, *, test=None, weight_decay=0.0, time_scale=1.0,
                 center=False, temperature=0.0, noise_key=None):
        self.network, self.data, self.test = check_common(network, data, test)
        self.tspan = check_span(tspan)
        lambdas = check_weight_decay(self.network, weight_decay)
        scales = check_time_scale(self.network, time_scale)
        self.weight_decay = lambdas if isinstance(weight_decay, (list, tuple)) else lambdas[0]
        self.time_scale = (time_scale if isinstance(time_scale, str) else
                           scales if isinstance(time_scale, (list, tuple)) else scales[0])
        if center not in (True, False):
            raise TypeError(f"center={center!r}: pass True (train f - f(theta_0)) or False.")
        self.center = bool(center)
        self.temperature = positive_float(temperature, "temperature", allow_zero=True)
        if noise_key is not None:
            if not self.temperature:
                raise ValueError(f"noise_key={noise_key!r} was given but temperature=0: the flow "
                                 "has no noise. Pass temperature > 0 for the Langevin flow, or "
                                 "drop noise_key.")
            noise_key = as_key(noise_key, name="noise_key")
        elif self.temperature and network_key(self.network) is None:
            raise ValueError(
                f"temperature={self.temperature}: the noise needs a key, and this "
                f"{type(self.network).__name__} has none (built from given weights). Pass "
                "noise_key=0 (or a JAX key).")
        self.noise_key = noise_key

    @property
    def span(self):
        return self.tspan

    def objective(self) -> Objective:
        """`phi = L + R` and the velocity `-c grad phi` of this problem."""
        return Objective.of(self.network, self.weight_decay, self.time_scale)

    def brownian_key(self) -> Any:
        """The key of the Brownian path (see the class docstring). Traceable."""
        own = network_key(self.network)
        if own is None:
            return self.noise_key
        if self.noise_key is None:
            return jax.random.fold_in(own, NOISE_TAG)
        return jax.random.fold_in(self.noise_key, jax.random.bits(own, dtype=jnp.uint32))

    def dynamics(self, solver, settings):
        extra = settings.extra
        params, static = trainable(self.network)
        X = self.data.X
        if self.temperature:
            solver = check_sde_solver(solver, self.temperature)
            if settings.dt0 is None:
                raise ValueError(f"temperature={self.temperature}: the Langevin flow is solved with "
                                 "a fixed step; pass dt0=... (e.g. dt0=0.01).")
            tol = extra["brownian_tol"]
            tol = settings.dt0 / 8 if tol is None else positive_float(tol, "brownian_tol")
        else:
            if extra["brownian_tol"] is not None:
                raise TypeError(f"brownian_tol={extra['brownian_tol']!r} is an option of the noisy "
                                "flow (temperature > 0); this flow is deterministic: drop it.")
            solver = check_solver(solver, parameter_count(self.network),
                                  limit=IMPLICIT_MAX_PARAMETERS, state="parameter-space flow",
                                  default=diffrax.Tsit5())
            tol = None
        save_regime = extra["save_regime"]
        if save_regime not in (True, False):
            raise TypeError(f"save_regime={save_regime!r}: pass True or False.")
        decays = any(check_weight_decay(self.network, self.weight_decay))
        plain = not (self.center or decays
                     or any(c != 1.0 for c in check_time_scale(self.network, self.time_scale)))
        factored = self._factored(extra["factored"], solver, decays)
        if factored:
            from ._factored import FactoredRungeKutta

            solver = FactoredRungeKutta(solver)
        return GradientFlow(
            factored=factored, solver=solver,
            static=static, X=X, y=self.data.y, X_test=self.test,
            save_ntk=bool(extra["save_ntk"]),
            objective=None if plain else self.objective(),
            offset=self.network(X) if self.center else None,
            offset_test=self.network(self.test) if self.center and self.test is not None else None,
            regime=Regime.of(self.network, X) if save_regime else None,
            temperature=self.temperature,
            noise_key=self.brownian_key() if self.temperature else None,
            brownian_tol=tol), params

    def _factored(self, factored: Any, solver: diffrax.AbstractSolver, decays: bool) -> bool:
        """Whether to keep the Runge-Kutta stages as factors (`_factored.py`): `None`
        decides by `factoring_pays`; `True` is refused where the stages are not low rank."""
        if factored not in (None, True, False):
            raise TypeError(f"factored={factored!r}: pass None (automatic, by size), True or "
                            "False.")
        if factored is False:
            return False
        reasons = []
        if not isinstance(self.network, AbstractLayeredNetwork):
            reasons.append(f"the network ({type(self.network).__name__}) is not layered")
        if not isinstance(solver, diffrax.AbstractERK):
            reasons.append(f"solver={type(solver).__name__}() is not an explicit Runge-Kutta method")
        if decays:
            reasons.append("weight decay makes every stage full rank")
        if self.temperature:
            reasons.append("the noisy flow is an SDE")
        if factored is None:
            from ._factored import factoring_pays

            return not reasons and factoring_pays(self.network, self.data.n, solver)
        if reasons:
            raise ValueError(f"factored=True: {'; '.join(reasons)}. Factored stages need a layered "
                             "network (MLP, JacotMLP, TwoLayer), an explicit Runge-Kutta solver "
                             "(Tsit5, Dopri5, Dopri8) and a noiseless flow without weight decay; "
                             "use factored=None (automatic) or False.")
        return True

    def labels(self):
        if not self.center:
            return {}
        return {"f": {"long_name": "centered network output f(x_a; theta) - f(x_a; theta_0)"},
                "f_test": {"long_name": "centered output on the test inputs"}}

    def config(self):
        config = super().config()
        if self.noise_key is not None:
            config["noise_key"] = np.asarray(jax.random.key_data(self.noise_key)).tolist()
        for name in ("weight_decay", "time_scale"):
            if isinstance(config.get(name), tuple):
                config[name] = list(config[name])
        return config

    def title(self):
        return "nthdyn GradientFlowProblem solution"


def network_key(network: AbstractNetwork) -> Any:
    """The key a layered network was drawn from (`None`: given weights or not layered)."""
    return network.key if isinstance(network, AbstractLayeredNetwork) else None
