"""Deterministic limits of the kernels at initialization, estimated from ensembles."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from .._checks import positive_int
from .._data import check_inputs
from ._quadrature import AbstractQuadrature
from ._recursion import limiting_kernels



_SLOTS = ("sample", "sample_b", "sample_c", "sample_d", "sample_e", "sample_f")


def estimate_kernel_limit(
    network: Any,
    X: Any,
    *,
    widths: Any,
    seeds: Any,
    order: int = 2,
    kernel: Any = None,
    master_seed: int = 0,
    quadrature: AbstractQuadrature | None = None,
):
    """The seed mean of `m^(r/2 - 1) K(r)` at initialization, with its standard
    error, for each width `m`: an estimate of the deterministic limit `frak K^(r)`
    of Huang & Yau eq. (11) (zero for odd `r`).

    **Arguments:**

    - `network`: a network whose `remake(width=m, key=k)` gives the members.
    - `X`: inputs `(n, d)`.
    - `widths`, `seeds`: the widths `m`, and the integer seeds; member `s` is
      initialised from `jax.random.fold_in(jax.random.key(master_seed), s)`
      (as in `EnsembleProblem`).
    - `order`: `r >= 2`.
    - `kernel`: a function `(network, X) -> K(r)` of shape `(n,) * r`; by default the
      structured NTK for `r = 2` and `nthdyn.hierarchy_kernel(network, X, r)` above.
    - `quadrature`: for the limiting NTK (see `limiting_kernels`).

    **Returns:** an `xarray.Dataset` with dimensions `width` and `sample`,
    `sample_b`, ...: `K_mean`, `K_stderr` (seed standard deviation / sqrt(seeds)),
    `K_std` (seed standard deviation), and for `r = 2` with an `MLP` or `JacotMLP`
    also `K_limit` (the limiting NTK) and `z = (K_mean - K_limit) / K_stderr`.

    Cost: `len(widths) * len(seeds)` initializations and kernels.
    """
    import xarray as xr

    from .._io import coordinate, provenance, variable
    from .._kernels import ntk_traced
    from .._network import AbstractLayeredNetwork, AbstractNetwork

    if not isinstance(network, AbstractNetwork):
        raise TypeError(f"network={type(network).__name__}: pass an nthdyn network such as "
                        "nthdyn.MLP(in_size=3, width=1, depth=2, key=0).")
    order = positive_int(order, "order", minimum=2)
    X = check_inputs(X, "X", in_size=network.in_size)
    widths = [positive_int(m, f"widths[{i}]")
              for i, m in enumerate(np.atleast_1d(np.asarray(widths)).tolist())]
    if not widths:
        raise ValueError("widths=[]: pass at least one width, e.g. widths=[64, 256, 1024].")
    seeds = [positive_int(s, f"seeds[{i}]", minimum=0)
             for i, s in enumerate(np.atleast_1d(np.asarray(seeds)).tolist())]
    if len(seeds) < 2:
        raise ValueError(f"seeds={seeds!r}: a standard error needs at least 2 seeds.")
    if len(set(seeds)) != len(seeds):
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        raise ValueError(f"seeds repeats {repeated}: a repeated seed draws the same network "
                         "twice and shrinks the standard error; pass distinct seeds, e.g. "
                         f"seeds=range({len(seeds)}).")
    master_seed = positive_int(master_seed, "master_seed", minimum=0)
    if kernel is not None and not callable(kernel):
        raise TypeError(f"kernel={kernel!r}: pass a function (network, X) -> K(r) of shape "
                        "(n,) * order, or None for the NTK / nthdyn.hierarchy_kernel.")
    keys = [jax.random.fold_in(jax.random.key(master_seed), s) for s in seeds]
    if kernel is None and order == 2:
        def kernel(net, X):  # structured for layered networks; one compilation per width
            return ntk_traced(net, X, None)
    elif kernel is None:
        from .._kernels import hierarchy_kernel

        def kernel(net, X):
            return hierarchy_kernel(net, X, order)

    def member_kernel(net, m, key):
        return kernel(net.remake(width=m, key=key), X)

    shape = (len(widths),) + (X.shape[0],) * order
    mean, std = np.empty(shape), np.empty(shape)
    for i, m in enumerate(widths):
        samples = []
        for key in keys:
            sample = np.asarray(member_kernel(network, m, key), dtype=np.float64)
            if sample.shape != shape[1:]:
                raise ValueError(f"kernel returned shape {sample.shape}; expected {shape[1:]} "
                                 f"(order={order} slots of n={X.shape[0]} inputs).")
            samples.append(m ** (order / 2 - 1) * sample)
        samples = np.stack(samples)
        mean[i], std[i] = samples.mean(axis=0), samples.std(axis=0, ddof=1)
    dims = ("width",) + _SLOTS[:order]
    name = f"m^({order}/2-1) K({order})" if order != 2 else "K2"
    data_vars = {
        "K_mean": variable("K_mean", mean, dims=dims,
                           long_name=f"seed mean of {name} at initialization"),
        "K_std": variable("K_std", std, dims=dims, long_name=f"seed standard deviation of {name}"),
        "K_stderr": variable("K_stderr", std / np.sqrt(len(seeds)), dims=dims,
                             long_name=f"standard error of the seed mean of {name}"),
        "X": variable("X", X),
    }
    if order == 2 and isinstance(network, AbstractLayeredNetwork):
        limit = limiting_kernels(network, X, quadrature=quadrature).ntk
        data_vars["K_limit"] = variable("K_limit", limit, dims=dims[1:])
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (mean - limit) / (std / np.sqrt(len(seeds)))
        data_vars["z"] = variable("z", z, dims=dims)
    coords = {"width": coordinate("width", widths)}
    for slot in dims[1:]:
        coords[slot] = coordinate(slot, np.arange(X.shape[0]), long_name=f"input index ({slot})")
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update(provenance(
        f"seed means of m^(r/2-1) K(r) at initialization, r = {order}",
        {"network": network.config(), "order": order, "widths": widths, "seeds": seeds,
         "master_seed": master_seed}))
    ds.attrs["seed_count"] = len(seeds)
    return ds
