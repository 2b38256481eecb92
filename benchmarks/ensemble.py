"""Benchmark: a vmapped ensemble against a Python loop of single solves.

32 seeds of one width-256 two-layer tanh network (Huang-Yau eq. (1)-(2)) on
n = 8 points of the unit sphere in R^4, two computations:

- "gradient flow": each member trained by exact gradient flow (eq. 3) to
  t = 10 with Tsit5 at rtol = atol = 1e-8, 11 save times.
- "K2 at init": the NTK of each member at t = 0 (an `output=` function, eq. 7).

Two levels, each as vmap against loop:

- end to end: `nd.solve(nd.EnsembleProblem(flow, seeds=range(32)), ...)`, one
  xarray Dataset, against the loop `nd.to_dataset(nd.solve(member, ...))` over
  `ensemble.member(seed=s)` concatenated along `seed`: the same Dataset. Both
  draw the networks, solve, and build Datasets.
- JAX core: only the batched computation (networks drawn from the keys and
  solved under one `jax.vmap`; diffrax keeps a step size per member and the
  batched loop runs until the slowest member is done) against the loop of the
  same jitted single-member computation; no Datasets.

Each side runs once to compile ("first call", compilation included) and then
`--reps` more times; the table gives the median of those. The throughput ratio
is loop time / vmap time (> 1: vmap is faster). Both sides produce the same
numbers (max abs diff, checked).

Run:

    python benchmarks/ensemble.py           # the table (a few minutes on 2 CPU cores)
    python benchmarks/ensemble.py --quick   # 8 seeds at width 32
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

import nthdyn as nd  # noqa: E402


def _timed(function, reps):
    start = time.perf_counter()
    first_result = function()
    first = time.perf_counter() - start
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), first_result


def kernel(problem):
    return {"K2": (("sample", "sample_b"), nd.ntk_structured(problem.network, problem.data.X))}


def main(argv=None):
    from nthdyn._ensemble import _jit_core, _jit_vmapped_core, computation_for, point_template

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="8 seeds at width 32")
    args = parser.parse_args(argv)
    seeds, width = (8, 32) if args.quick else (args.seeds, args.width)

    data = nd.sphere_data(n=8, d=4, key=jax.random.key(0))
    net = nd.MLP(in_size=4, width=width, depth=1, activation="tanh", key=0)
    flow = nd.GradientFlowProblem(net, data, tspan=(0.0, 10.0))
    options = dict(saveat=jnp.linspace(0.0, 10.0, 11), rtol=1e-8, atol=1e-8)
    flows = nd.EnsembleProblem(flow, seeds=range(seeds))
    kernels = nd.EnsembleProblem(flow, seeds=range(seeds), output=kernel)
    rows = []

    # End to end: one Dataset either way.
    def flow_loop():
        return xr.concat([nd.to_dataset(nd.solve(flows.member(seed=s), nd.Tsit5(), **options))
                          for s in range(seeds)], dim="seed")

    def flow_vmap():
        return nd.solve(flows, nd.Tsit5(), **options)

    def kernel_loop():
        out = []
        for s in range(seeds):
            member = kernels.member(seed=s)
            out.append(xr.Dataset({"K2": (("sample", "sample_b"),
                                          np.asarray(nd.ntk(member.network, member.data.X)))}))
        return xr.concat(out, dim="seed")

    def kernel_vmap():
        return nd.solve(kernels)

    for name, loop_fn, vmap_fn, variable in (
            ("gradient flow, end to end", flow_loop, flow_vmap, "f"),
            ("K2 at init, end to end", kernel_loop, kernel_vmap, "K2")):
        loop, vmap = _timed(loop_fn, args.reps), _timed(vmap_fn, args.reps)
        error = float(np.abs(loop[2][variable].values - vmap[2][variable].values).max())
        notes = ""
        if variable == "f":
            steps = vmap[2].num_steps.values
            notes = f"steps per member {steps.min()}-{steps.max()}"
        rows.append((name, loop, vmap, error, notes))

    # JAX core only: the batched computation against the loop of the single one.
    for name, ensemble, variable in (("gradient flow, JAX core", flows, "flow"),
                                     ("K2 at init, JAX core", kernels, "K2")):
        computation = computation_for(ensemble, nd.Tsit5() if variable == "flow" else None,
                                      options if variable == "flow" else {})
        template = point_template(flow, {})
        setup = computation.setup(template)
        keys = jnp.stack([ensemble.key(s) for s in range(seeds)])
        members = [ensemble.member(seed=s) for s in range(seeds)]

        def pick(raw):
            return raw[1].ys[0]["f"] if variable == "flow" else raw["K2"][1]

        def core_vmap():
            return jax.block_until_ready(pick(_jit_vmapped_core(computation, template, setup,
                                                                keys)))

        def core_loop():
            return jax.block_until_ready(jnp.stack([pick(_jit_core(computation, m, setup))
                                                    for m in members]))

        loop, vmap = _timed(core_loop, args.reps), _timed(core_vmap, args.reps)
        rows.append((name, loop, vmap, float(jnp.abs(loop[2] - vmap[2]).max()), ""))

    print(f"# {seeds} seeds, width m = {width}, H = 1, tanh, n = 8, d = 4; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"jax {jax.__version__} ({jax.default_backend()}); load average at the end "
          f"{os.getloadavg()[0]:.1f}")
    print("| computation | loop: first call (s) | loop: median (s) | vmap: first call (s) "
          "| vmap: median (s) | throughput ratio loop/vmap | max abs diff | notes |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, (l_first, l_med, _), (v_first, v_med, _), error, notes in rows:
        print(f"| {name} | {l_first:.2f} | {l_med:.3f} | {v_first:.2f} | {v_med:.3f} | "
              f"{l_med / v_med:.2f} | {error:.1e} | {notes} |")


if __name__ == "__main__":
    main()
