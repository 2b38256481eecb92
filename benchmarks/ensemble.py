"""Benchmark: a vmapped ensemble against a Python loop of single solves.

32 seeds of one width-256 two-layer tanh network (Huang-Yau eq. (1)-(2), depth
H = 1) on n = 8 points of the unit sphere in R^4 (`nthdyn.sphere_data`), t in
[0, 1], 11 save times, Tsit5 at rtol = atol = 1e-10 (the defaults), for two
problem types, both solved through the same solve core:

- "gradient flow": `nd.GradientFlowProblem(net, data, tspan)`, the exact
  gradient flow of the parameters (eq. (3));
- "NTH p = 3": `nd.NTHProblem(net, data, order=3, tspan=...)`, the truncated
  hierarchy (eq. (15)): each member computes its kernels K2, K3 at t = 0 and
  integrates the (r, R) system.

Each at two levels:

- end to end, three columns: `nd.solve(nd.EnsembleProblem(problem,
  seeds=range(32)), nd.Tsit5(), ...)` (vmap, the default: the 32 networks
  drawn and solved under one jitted `vmap`, the Dataset built once from the
  batched arrays); the same ensemble with `vmap=False` (members solved one at a
  time inside the ensemble); and the Python loop a user would write without the
  ensemble, `nd.to_dataset(nd.solve(ensemble.member(seed=s), nd.Tsit5(), ...))`
  for each seed, then `xarray.concat` along `seed`. All three return the
  Dataset of the 32 members.
- core only, two columns: the jitted batched solve
  `eqx.filter_jit(eqx.filter_vmap(solve_one))` over the networks
  `eqx.filter_vmap(lambda k: nd.MLP(..., key=k))(keys)` (the ensemble's own
  member keys), against a loop of the same jitted `solve_one` over the
  networks one at a time; `solve_one(net, data)` is `nd.solve(problem,
  nd.Tsit5(), saveat=..., throw=False)`. No Datasets; each call ends with
  `jax.block_until_ready` on its solutions. diffrax keeps one step size per
  member under vmap, and the batched loop runs until the slowest member is done.

Every variant is called once first (the "first call" columns: compilation
included), then all variants are timed in turn, `--reps` rounds (default 3),
and the table gives the best (minimum) wall time (`time.perf_counter`) of each:
on a shared machine the minimum estimates the uncontended cost. The speedups
are time ratios (> 1: the vmapped ensemble is faster). `max abs df` is the max
abs difference of `f` (all seeds, times, samples) between the vmap and the
loop results (and, end to end, between vmap=False and the loop): the variants
compute the same numbers. First calls share compiled functions: the ensemble
with vmap=False runs after the loop and reuses its compiled single solve. The
load average is printed before and after.

Run:

    python benchmarks/ensemble.py           # the table (about a minute on 2 CPU cores, mostly compilation)
    python benchmarks/ensemble.py --quick   # 4 seeds at width 16 (checks that the script works)
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

import nthdyn as nd  # noqa: E402

N, D, DEPTH, ACTIVATION = 8, 4, 1, "tanh"
TSPAN = (0.0, 1.0)
SAVES = 11
TOL = 1e-10
PROBLEMS = ("gradient flow", "NTH p = 3")


def make_problem(name, net, data):
    if name == "gradient flow":
        return nd.GradientFlowProblem(net, data, TSPAN)
    return nd.NTHProblem(net, data, order=3, tspan=TSPAN)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min), {five:.1f} (5 min)"


def variants(name, seeds, width, data, options):
    """The five computations for one problem type: {label: function}, each
    returning the `f` of all members (seed, time, sample) as a NumPy array, and the
    members' step counts."""
    net = nd.MLP(D, width, DEPTH, ACTIVATION, key=0)
    problem = make_problem(name, net, data)
    ensemble = nd.EnsembleProblem(problem, seeds=seeds)
    one_at_a_time = nd.EnsembleProblem(problem, seeds=seeds, vmap=False)

    def e2e_vmap():
        return nd.solve(ensemble, nd.Tsit5(), **options)

    def e2e_novmap():
        return nd.solve(one_at_a_time, nd.Tsit5(), **options)

    def e2e_loop():
        return xr.concat([nd.to_dataset(nd.solve(ensemble.member(seed=s), nd.Tsit5(), **options))
                          for s in seeds], dim="seed")

    # Core only. `data` is an argument (traced under jit), not a closure: inside jit,
    # the input checks of the hierarchy kernels fail on a closed-over concrete X.
    def solve_one(net, data):
        return nd.solve(make_problem(name, net, data), nd.Tsit5(), throw=False, **options)

    keys = jnp.stack([ensemble.key(s) for s in seeds])
    nets = eqx.filter_vmap(lambda k: nd.MLP(D, width, DEPTH, ACTIVATION, key=k))(keys)
    singles = [jax.tree_util.tree_map(lambda x: x[i] if eqx.is_array(x) else x, nets)
               for i in range(len(seeds))]
    batched = eqx.filter_jit(eqx.filter_vmap(solve_one, in_axes=(0, None)))
    single = eqx.filter_jit(solve_one)

    def core_vmap():
        return jax.block_until_ready(batched(nets, data))

    def core_loop():
        return jax.block_until_ready([single(n, data) for n in singles])

    return {
        "e2e loop": (e2e_loop, lambda ds: (ds.f.values, ds.num_steps.values)),
        "e2e vmap=False": (e2e_novmap, lambda ds: (ds.f.values, ds.num_steps.values)),
        "e2e vmap": (e2e_vmap, lambda ds: (ds.f.values, ds.num_steps.values)),
        "core loop": (core_loop, lambda sols: (np.stack([np.asarray(s.f) for s in sols]),
                                               np.array([int(s.stats["num_steps"]) for s in sols]))),
        "core vmap": (core_vmap, lambda sol: (np.asarray(sol.f), np.asarray(sol.stats["num_steps"]))),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3, help="timed rounds (best of; default 3)")
    parser.add_argument("--quick", action="store_true", help="4 seeds at width 16")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error(f"--reps={args.reps}: must be >= 1")
    n_seeds, width = (4, 16) if args.quick else (args.seeds, args.width)
    seeds = range(n_seeds)
    data = nd.sphere_data(N, D, key=jax.random.key(0))
    options = dict(saveat=jnp.linspace(*TSPAN, SAVES), rtol=TOL, atol=TOL)
    load_start = load()
    start = time.perf_counter()

    runs = {name: variants(name, seeds, width, data, options) for name in PROBLEMS}
    first, best, values = {}, {}, {}
    for name, table in runs.items():  # warm up (compile) every variant
        for label, (function, extract) in table.items():
            t0 = time.perf_counter()
            result = function()
            first[name, label] = time.perf_counter() - t0
            values[name, label] = extract(result)
            best[name, label] = float("inf")
            print(f"  first call {name}, {label}: {first[name, label]:.2f} s", flush=True)
    for _ in range(args.reps):  # then time them in turn, best of --reps
        for name, table in runs.items():
            for label, (function, _) in table.items():
                t0 = time.perf_counter()
                function()
                best[name, label] = min(best[name, label], time.perf_counter() - t0)

    def diff(name, a, b):
        return float(np.max(np.abs(values[name, a][0] - values[name, b][0])))

    rows = []
    for name in PROBLEMS:
        steps = values[name, "e2e vmap"][1]
        for level, labels in (("end to end", ("e2e loop", "e2e vmap=False", "e2e vmap")),
                              ("core only", ("core loop", None, "core vmap"))):
            loop, novmap, vmap = labels
            t = {k: best[name, k] for k in labels if k}
            f = {k: first[name, k] for k in labels if k}
            rows.append([
                name, level,
                f"{t[loop]:.3f}", f"{t[novmap]:.3f}" if novmap else "-", f"{t[vmap]:.3f}",
                f"{t[loop] / t[vmap]:.2f}", f"{t[novmap] / t[vmap]:.2f}" if novmap else "-",
                " / ".join(f"{f[k]:.1f}" if k else "-" for k in labels),
                f"{diff(name, vmap, loop):.1e}",
                f"{diff(name, novmap, loop):.1e}" if novmap else "-",
                f"{steps.min()}-{steps.max()}",
            ])

    print()
    print(f"# {n_seeds} seeds, MLP width m = {width}, H = {DEPTH}, {ACTIVATION}, n = {N}, d = {D}, "
          f"t in [{TSPAN[0]:g}, {TSPAN[1]:g}], {SAVES} saves, Tsit5, rtol = atol = {TOL:g}"
          f"{' (--quick)' if args.quick else ''}")
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} "
          f"({jax.default_backend()}); best of {args.reps} after a first call; total "
          f"{time.perf_counter() - start:.0f} s")
    print(f"# load average: at start {load_start}; at end {load()}")
    columns = ["problem", "level", "loop (s)", "vmap=False (s)", "vmap (s)", "loop/vmap",
               "vmap=False/vmap", "first call loop / vmap=False / vmap (s)",
               "max abs df, vmap vs loop", "max abs df, vmap=False vs loop", "steps per member"]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    line = lambda cells: "| " + " | ".join(  # noqa: E731
        c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    print(line(columns))
    print("|" + "|".join("-" * (w + 1) + ("-" if i < 2 else ":") for i, w in enumerate(widths)) + "|")
    for row in rows:
        print(line(row))


if __name__ == "__main__":
    main()
