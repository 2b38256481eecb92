"""The solve core: options, status, the single integration routine, solutions."""

from ._core import (
    AbstractClosedForm as AbstractClosedForm,
    AbstractDynamics as AbstractDynamics,
    AbstractMap as AbstractMap,
    AbstractODE as AbstractODE,
    Float64Warning as Float64Warning,
    check_float64 as check_float64,
    half_mean_square as half_mean_square,
    last_finite_time as last_finite_time,
    observed as observed,
    solve as solve,
    solve_problem as solve_problem,
)
from ._options import DEFAULTS as DEFAULTS, Settings as Settings, check_span as check_span
from ._results import RESULTS as RESULTS, RETCODES as RETCODES, SolverError as SolverError, is_traced as is_traced
from ._solution import Solution as Solution
