"""The status of a solve as data: `RESULTS`, an enumeration in diffrax's manner.

A solve never decides on the host whether it succeeded: its status is an array
(`Solution.result`), computed inside the jitted solve, so that `solve` runs under
`jax.jit` and `eqx.filter_vmap` (one status per member of a batch). `throw=True`
turns a failure into an error: a `SolverError` whose message names the option to
change when the solve ran eagerly, an `EquinoxRuntimeError` carrying the member's
message inside `jit`/`vmap`.

The integer codes are stable and are what NetCDF files store (CF `flag_values` /
`flag_meanings`).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._lazy import diffrax


class RESULTS(eqx.Enumeration):
    """The status of a solve (and of an ensemble member). Each member carries the
    message shown when it is raised."""

    successful = ""
    max_steps_reached = (
        "The solver took `max_steps` steps without reaching the end of the span: raise "
        "`max_steps`, loosen `rtol`/`atol`, or shorten the span."
    )
    nonfinite = (
        "The saved values became non-finite (NaN or inf): lower the learning rate or the "
        "weight scales, check the data, or (truncated hierarchy) shorten the span."
    )
    solver_failure = (
        "The diffrax solver failed (an implicit solver's Newton iteration did not converge, "
        "or the step size underflowed): pass another `solver` or other `rtol`/`atol`."
    )
    member_error = "The ensemble member's computation raised an error; its `message` says which."
    lost = "The executor lost the point (a worker died): run the same sweep again to compute it."


#: The integer code of each status and its name (NetCDF `flag_values`/`flag_meanings`).
RETCODES: dict[int, str] = {
    int(getattr(RESULTS, name)._value): name
    for name in ("successful", "max_steps_reached", "nonfinite", "solver_failure",
                 "member_error", "lost")
}


class SolverError(RuntimeError):
    """A solve did not reach the end of its span (raised by `throw=True`)."""


def code(result: Any) -> np.ndarray:
    """The integer code(s) of a `RESULTS` item, as NumPy (any batch shape)."""
    return np.asarray(result._value, dtype=np.int32)


def name(result: Any) -> str:
    """The name of a single (unbatched) status, e.g. `"max_steps_reached"`."""
    return RETCODES[int(code(result))]


def from_diffrax(result: diffrax.RESULTS, *observed: Any) -> RESULTS:
    """diffrax's status mapped onto `RESULTS` (traceable), with `nonfinite` where a
    NaN was saved or the solve's only event (a non-finite start, `_integrate`) stopped it
    (saves it never reached diffrax fills with inf, not NaN), and where a successful
    solve saved an inf."""
    status = RESULTS.where(
        result == diffrax.RESULTS.successful, RESULTS.successful,
        RESULTS.where(result == diffrax.RESULTS.max_steps_reached, RESULTS.max_steps_reached,
                      RESULTS.where(result == diffrax.RESULTS.event_occurred, RESULTS.nonfinite,
                                    RESULTS.solver_failure)))
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(observed) if eqx.is_array(leaf)]
    nan = jnp.any(jnp.stack([jnp.any(jnp.isnan(leaf)) for leaf in leaves]))
    return check_finite(RESULTS.where(nan, RESULTS.nonfinite, status), *observed)


def all_finite(tree: Any) -> Any:
    """Whether every entry of every array of `tree` is finite (a boolean scalar; traceable)."""
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(tree) if eqx.is_array(leaf)]
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def check_finite(status: RESULTS, *observed: Any) -> RESULTS:
    """`nonfinite` where `status` is successful but an array of `observed` is not finite."""
    return RESULTS.where((status == RESULTS.successful) & ~all_finite(observed),
                         RESULTS.nonfinite, status)


def is_traced(tree: Any) -> bool:
    """Whether any leaf of `tree` is a JAX tracer (inside `jit`, `vmap`, ...)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))
