"""One point of an ensemble: every seed of one value of the other axes, computed
in batches (`vmap` over the members' keys) and stacked along `seed`.

A point is the unit of work of an executor and of storage of a sweep store. A
member that fails is recorded (status and message) and its values are NaN; the
errors recorded are those of the user's code (`output` functions) and the clear
errors of building the point (a value an axis cannot take); nthdyn's own
errors are raised.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import numpy as np

from .._io import attributes, coordinate
from .._lazy import xr
from .._problems import remake
from ._computation import (
    LOST,
    MEMBER_ERROR,
    AbstractComputation,
    Block,
    concat_seeds,
    message,
    nan_like,
    stack_members,
)
from ._problem import (
    AUTO_BATCH_BYTES,
    EnsembleProblem,
    abstract_parameter_count,
    point_template,
    with_key,
)

#: Errors of building a point that are the user's (a bad axis value): recorded, not raised.
POINT_ERRORS = (ValueError, TypeError, MemoryError)

_TRACING_ERRORS = (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
                   jax.errors.TracerIntegerConversionError)


def _is_tracing_error(error: BaseException | None) -> bool:
    """Whether `error` (or an error it was raised from) means "this function needs
    concrete values": it cannot be jitted, but it can run under an eager vmap."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, _TRACING_ERRORS):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def auto_batch_size(problem: Any, computation: AbstractComputation, n_seeds: int) -> int:
    member_bytes = abstract_parameter_count(problem.network) * 8 * computation.work_factor()
    return max(1, min(n_seeds, AUTO_BATCH_BYTES // max(member_bytes, 1)))


def run_point(ensemble: EnsembleProblem, computation: AbstractComputation,
              batch_size: int | str, index: int) -> xr.Dataset:
    """Compute every member of point `index`: the unit of work of an executor.

    Returns a Dataset with a `seed` dimension (when the ensemble has seeds), the
    point's axis labels as scalar coordinates, `retcode` and `message`.
    """
    seeds = ensemble.seeds
    n = 1 if seeds is None else len(seeds)
    try:
        point = ensemble.point(index)
        if seeds is None:
            problem = remake(ensemble.problem, **point) if point else ensemble.problem
        else:
            problem = point_template(ensemble.problem, point)
        setup = computation.setup(problem)
    except POINT_ERRORS as error:  # the point itself cannot be built: every member fails
        return point_dataset(ensemble, index, [Block(None, [MEMBER_ERROR] * n, [message(error)] * n)])
    if seeds is None:
        blocks = [stack_members([_single(computation, problem, setup, None)], seeded=False)]
    else:
        keys = ensemble.keys()
        if computation.batchable():
            size = (auto_batch_size(problem, computation, n) if batch_size == "auto"
                    else int(batch_size))
            blocks = _batched(computation, problem, setup, keys, size)
        else:
            blocks = [stack_members([_single(computation, problem, setup, key) for key in keys])]
    return point_dataset(ensemble, index, blocks)


def _core(computation, member, setup):
    return computation.core(member, setup)


def _vmapped_core(computation, problem, setup, keys, shared):
    return eqx.filter_vmap(lambda key, part: computation.core(with_key(problem, key), setup, part)
                           )(keys, shared)


# Module-level jitted functions: compiled once per shape and configuration.
_jit_core = eqx.filter_jit(_core)
_jit_vmapped_core = eqx.filter_jit(_vmapped_core)


def _single(computation, problem, setup, key) -> tuple[xr.Dataset | None, int, str]:
    member = problem if key is None else with_key(problem, key)
    try:
        if computation.batchable():
            try:
                raw = _jit_core(computation, member, setup)
            except Exception as error:
                if not _is_tracing_error(error):
                    raise
                raw = computation.core(member, setup)
        else:
            raw = computation.core(member, setup)
        ds, status = computation.finish(raw, setup)
        return ds, status, ""
    except Exception as error:
        if not computation.user_code():
            raise
        return None, MEMBER_ERROR, message(error)


def _batched(computation, problem, setup, keys, size) -> list[Block]:
    batched = _jit_vmapped_core
    blocks = []
    for start in range(0, keys.shape[0], size):
        part = keys[start:start + size]
        shared = computation.block_inputs(problem, setup, part)
        try:
            try:
                raw = batched(computation, problem, setup, part, shared)
            except Exception as error:
                if not _is_tracing_error(error) or batched is _vmapped_core:
                    raise
                # Not jit-able (e.g. input checks on concrete values): vmap eagerly.
                batched = _vmapped_core
                raw = batched(computation, problem, setup, part, shared)
        except Exception:
            if not computation.user_code():
                raise
            # Find which members fail: compute them one at a time.
            blocks.append(stack_members([_single(computation, problem, setup, key) for key in part]))
            continue
        blocks.append(computation.finish_block(raw, setup, part.shape[0]))
    return blocks


def point_dataset(ensemble: EnsembleProblem, index: int, blocks: list[Block]) -> xr.Dataset:
    """Stack the blocks of one point along `seed`; failed members are NaN."""
    template = next((b.ds for b in blocks if b.ds is not None), None)
    if template is not None:
        clash = set(template.dims) & set(ensemble.dims) - {"seed"}
        if clash:
            raise ValueError(f"the member results have dimensions {sorted(clash)}, "
                             "which are sweep axes: rename them in output.")
    seeded = ensemble.seeds is not None
    member_dims = ("seed",) if seeded else ()
    if template is None:
        ds = xr.Dataset()
    elif seeded:
        parts = []
        for block in blocks:
            if block.ds is not None:
                parts.append(block.ds)
            else:
                one = nan_like(template.isel(seed=0, drop=True))
                parts.append(concat_seeds([one] * len(block.codes)))
        ds = parts[0] if len(parts) == 1 else concat_seeds(parts)
    else:
        ds = template
    if seeded:
        ds = ds.assign_coords(seed=coordinate("seed", np.asarray(ensemble.seeds, dtype=np.int64)))
    codes = [code for block in blocks for code in block.codes]
    messages = np.array([text for block in blocks for text in block.messages], dtype=object)
    ds["retcode"] = (member_dims, np.asarray(codes if seeded else codes[0], dtype=np.int32),
                     attributes("retcode", long_name="status of the ensemble member"))
    ds["message"] = (member_dims, messages if seeded else messages[0], attributes("message"))
    return ds.assign_coords({name: ((), label, coordinate(name, label)[2])
                             for name, label in ensemble.point_labels(index).items()})


def lost_point(ensemble: EnsembleProblem, index: int, text: str) -> xr.Dataset:
    """The placeholder of a point that the executor could not run."""
    n = 1 if ensemble.seeds is None else len(ensemble.seeds)
    return point_dataset(ensemble, index, [Block(None, [LOST] * n, [text] * n)])
