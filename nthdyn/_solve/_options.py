"""The options of `solve`: one name, one meaning and one default for every problem.

| option      | default                    | meaning                                                |
|-------------|----------------------------|--------------------------------------------------------|
| `saveat`    | 101 times over the span    | save times (steps for a discrete map)                  |
| `rtol`      | `1e-10`                    | relative tolerance of the step-size controller         |
| `atol`      | `1e-10`                    | absolute tolerance of the step-size controller         |
| `norm`      | `optimistix.two_norm`      | the norm of the scaled error estimate                  |
| `max_steps` | `100_000`                  | the most steps before the solve gives up               |
| `dt0`       | `None` (automatic)         | the first step                                         |
| `progress`  | `False`                    | a progress bar (diffrax's `TqdmProgressMeter`)         |
| `throw`     | `True`                     | raise on failure (`False`: return the status)          |

The default norm is the unscaled Euclidean norm of the error over the whole state
(not diffrax's RMS norm): the state holds exactly the quantities that are compared
with theory (the parameters, whose error bounds the outputs' by
`|delta f| <= ||grad f|| ||delta theta||_2` with `||grad f||^2 = K2(x, x) = O(1)`;
the outputs and kernels of the hierarchy), and the RMS norm would dilute the error
of a few outputs among `P` parameters or `n^(p-1)` kernel entries.

Problems add options of their own (`save_ntk`, `kernels`, ...): `solve` names them
all when it meets one it does not know.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import positive_float, positive_int
from .._lazy import diffrax, optx


def two_norm(x: Any) -> Any:
    """`optimistix.two_norm` (the default `norm`; optimistix is imported on first use)."""
    return optx.two_norm(x)


#: The common options of `solve` and their defaults (one place).
DEFAULTS: dict[str, Any] = {
    "saveat": None,
    "rtol": 1e-10,
    "atol": 1e-10,
    "norm": two_norm,
    "max_steps": 100_000,
    "dt0": None,
    "progress": False,
    "throw": True,
}
#: Options that only mean something for an ODE (not for a discrete map).
ODE_ONLY = ("rtol", "atol", "norm", "max_steps", "dt0")
#: Save times when `saveat` is not given.
DEFAULT_SAVE_COUNT = 101


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated options of one solve (made on the host, once)."""

    ts: np.ndarray
    t0: float
    t1: float
    rtol: float
    atol: float
    norm: Callable
    max_steps: int
    dt0: float | None
    progress: bool
    throw: bool
    extra: dict[str, Any]

    def controller(self) -> diffrax.AbstractStepSizeController:
        """A PID controller on `norm`, stepping exactly onto every save time, so that
        saved values carry the solver's accuracy rather than an interpolant's."""
        return diffrax.ClipStepSizeController(
            diffrax.PIDController(rtol=jnp.asarray(self.rtol, float), atol=jnp.asarray(self.atol, float),
                                  norm=self.norm),
            step_ts=jnp.asarray(self.ts))

    def meter(self) -> diffrax.AbstractProgressMeter:
        if not self.progress:
            return diffrax.NoProgressMeter()
        from ._meter import SpanProgressMeter

        return SpanProgressMeter()

    def record(self, discrete: bool) -> dict[str, Any]:
        """The options as they enter provenance (JSON-ready)."""
        common = {} if discrete else dict(rtol=self.rtol, atol=self.atol,
                                          norm=_norm_name(self.norm), max_steps=self.max_steps)
        extra = {k: (int(v) if isinstance(v, bool) else v) for k, v in self.extra.items()
                 if isinstance(v, (bool, int, float, str)) or v is None}
        return {**common, **extra}


def _norm_name(norm: Callable) -> str:
    return getattr(norm, "__name__", repr(norm))


def save_times(saveat: Any, t0: float, t1: float, *, default_count: int = DEFAULT_SAVE_COUNT,
               span: str = "tspan") -> np.ndarray:
    """Validated, strictly increasing save times within `[t0, t1]` (`span` names
    the range in errors)."""
    if saveat is None:
        return np.linspace(t0, t1, default_count)
    if isinstance(saveat, jax.core.Tracer):  # inside jit: only the shape can be checked
        if saveat.ndim != 1 or saveat.shape[0] == 0:
            raise ValueError(f"saveat has shape {saveat.shape}: pass a non-empty 1-d array of times.")
        return saveat
    try:
        ts = np.atleast_1d(np.asarray(saveat, dtype=float))
    except (TypeError, ValueError):
        raise ValueError(f"saveat={saveat!r}: pass a 1-d array of times.") from None
    if ts.ndim != 1 or ts.size == 0 or not np.all(np.isfinite(ts)):
        raise ValueError(f"saveat={saveat!r}: pass a non-empty 1-d array of finite times.")
    if np.any(np.diff(ts) <= 0):
        raise ValueError(f"saveat: times must be strictly increasing, got {ts}.")
    if ts[0] < t0 or ts[-1] > t1:
        raise ValueError(
            f"saveat: times must lie in {span}=({t0:g}, {t1:g}); got {ts[0]:g} .. {ts[-1]:g}."
        )
    return ts


def save_steps(saveat: Any, steps: int) -> np.ndarray:
    """Validated integer steps to save in `0..steps` (all of them by default)."""
    if isinstance(saveat, jax.core.Tracer):
        raise ValueError("saveat: the steps of gradient descent must be known when solve is "
                         "called (a NumPy array or list, not a traced array inside jit).")
    ts = save_times(saveat, 0, steps, default_count=steps + 1, span="steps")
    if not np.all(ts == np.round(ts)):
        raise ValueError(f"saveat: gradient-descent steps must be integers, got {ts}.")
    return ts.astype(np.int64)


def check_options(problem: Any, options: dict[str, Any]) -> Settings:
    """Validate the options of `solve(problem, ...)`: the common ones (`DEFAULTS`)
    and the problem's own (`type(problem).solve_options`), each named in errors."""
    own = type(problem).solve_options
    discrete = problem.discrete
    known = {**DEFAULTS, **own}
    unknown = sorted(set(options) - set(known))
    if unknown:
        names = [k for k in known if not (discrete and k in ODE_ONLY)]
        raise TypeError(
            f"solve({type(problem).__name__}, ...) got unknown options {unknown}; "
            f"the options are {names}."
        )
    if discrete:
        given = sorted(k for k in ODE_ONLY if k in options)
        if given:
            raise TypeError(
                f"solve({type(problem).__name__}, ...) got {given}: these control an ODE "
                "solver's steps, and this problem is a discrete map (its steps are the "
                "problem's). Drop them."
            )
    merged = {**known, **options}
    start, stop = problem.span
    if discrete:
        ts = save_steps(merged["saveat"], stop)
    else:
        ts = save_times(merged["saveat"], start, stop)
    norm = merged["norm"]
    if not callable(norm):
        raise TypeError(f"norm={norm!r}: pass a function of a PyTree returning a scalar, "
                        "e.g. optimistix.two_norm (default), optimistix.rms_norm or "
                        "optimistix.max_norm.")
    dt0 = merged["dt0"]
    if dt0 is not None:
        dt0 = positive_float(dt0, "dt0")
    return Settings(
        ts=ts, t0=float(start), t1=float(stop),
        rtol=positive_float(merged["rtol"], "rtol"),
        atol=positive_float(merged["atol"], "atol"),
        norm=norm,
        max_steps=positive_int(merged["max_steps"], "max_steps"),
        dt0=dt0,
        progress=_flag(merged["progress"], "progress"),
        throw=_flag(merged["throw"], "throw"),
        extra={k: merged[k] for k in own},
    )


def _flag(value: Any, name: str) -> bool:
    if value not in (True, False):
        raise TypeError(f"{name}={value!r}: pass True or False.")
    return bool(value)


def check_span(tspan: Any) -> tuple[float, float]:
    """`(t0, t1)` with finite `t0 < t1`."""
    try:
        t0, t1 = (float(t) for t in tspan)
    except (TypeError, ValueError):
        raise ValueError(f"tspan={tspan!r}: pass two numbers (t0, t1), e.g. (0.0, 50.0).") from None
    if not (math.isfinite(t0) and math.isfinite(t1)):
        raise ValueError(f"tspan={tspan!r}: both ends must be finite.")
    if not t0 < t1:
        raise ValueError(
            f"tspan={tspan!r}: the end must be after the start (t0 < t1); "
            "training runs forward in time."
        )
    return (t0, t1)
