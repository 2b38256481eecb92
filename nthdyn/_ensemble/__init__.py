"""Ensembles: a problem swept over seeds, widths and any other field, batched with
`vmap` inside a point, run point by point on an executor, and stored so that a
stopped sweep resumes where it was."""

from ._computation import computation_for as computation_for
from ._executor import (
    AbstractExecutor as AbstractExecutor,
    DaskExecutor as DaskExecutor,
    InProcess as InProcess,
)
from ._problem import EnsembleProblem as EnsembleProblem, member_key as member_key
from ._store import SweepConfigError as SweepConfigError
from ._sweep import open_sweep as open_sweep
