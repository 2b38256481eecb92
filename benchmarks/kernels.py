"""Benchmark: the higher NTH kernels K3, K4 and the truncated NTH against the exact flow.

Two tables, for the Huang-Yau MLP (eq. (1)-(2), depth H = 1, tanh, inputs on the
unit sphere in R^8, N(0, 1) labels from `nthdyn.sphere_data`):

(a) The full kernels `K(3)` (n x n x n) and `K(4)` (n^4) of eq. (10),
    `K(r+1)(a_1..a_r, b) = <grad_theta K(r)(a_1..a_r), grad_theta f_b>`, built by
    nested forward-mode derivatives from two bases:

    - `structured`: the layer-factor NTK `K2 = sum_k (G_k G_k^T) * (U_k U_k^T)`
      (`nthdyn.hierarchy_kernel(..., method="structured")`);
    - `jacobian`: the plain-JAX product `J J^T` of full Jacobians, then the same
      nested jvp (`method="jacobian"`): what one writes without the structure.

    Both are the computation of `nthdyn.hierarchy_kernel(net, X, r, method=...)`
    without its (eager) input checks, jitted as a function of (parameters, X),
    lowered and compiled once per configuration, and measured side by side:

    - time: the best (minimum) wall time of the timed calls of the compiled
      function after one warm-up call, each ended by `block_until_ready`: at
      least `--reps` calls, and more (up to 50) until they add up to 0.2 s, so
      that millisecond timings survive load from other processes (the minimum
      estimates the uncontended cost; a median is at the mercy of the scheduler
      on a shared machine). The two methods' calls alternate. A method whose
      timed calls add up to `--budget` seconds makes no more calls (the cell then
      shows the count, e.g. `(2 calls)`).
    - memory: XLA's compiled memory analysis, `temp_size_in_bytes +
      output_size_in_bytes` (`jax.jit(fn).lower(...).compile().memory_analysis()`):
      deterministic, known before running, not the resident memory of the process.
    - a configuration is skipped, with the reason, when its compiled memory
      exceeds `--max-memory` (8 GB) or when its time, extrapolated from the
      smaller configurations already measured (time ~ n^r m), exceeds `--max-time`
      (60 s) for one call.
    - fitted cost exponents: least squares of `log t` on `(1, log n, log m)` per
      method and order, over the measured rows. The expected asymptotics at depth
      1 are `n^r m` for both methods (`(3n)^(r-2)` K2's of cost `~ n^2 m`); the
      structured base has the smaller constant (no `n x P` Jacobian).

(b) The truncated NTH, eq. (15), for p = 2, 3, 4 on n = 8 points over t in [0, 5],
    against the exact gradient flow (`nthdyn.solve(GradientFlowProblem, Tsit5(),
    rtol=atol=1e-10, save_ntk=True)`), at widths 1024, 4096 and 16384. The NTH
    is split into its two parts:

    - kernels: `nthdyn.initial_kernels(problem)`, K(2..p) at t = 0, which grow
      with the width;
    - ODE: `nthdyn.solve(problem, kernels=kernels)` with those kernels already
      computed, which should not grow with the width:
      the state is `f` and the kernels, of sizes n, n^2, ..., n^(p-1).

    Each part is timed on its first call (compilation included) and as the
    best of its warm calls (as in (a)). `err_f(t=5)` is `||f - f~||_2` at the end
    (`nthdyn.compare`, eq. (18)).

(c) Factored against dense directions (`factored=True` / `False` of
    `nthdyn.hierarchy_kernel` and `hierarchy_contraction`) for K3, K4 and the
    contraction `K4[c, d]`, over depths H = 1, 2, 3 and n = 6 (m = 4096), n = 32
    (m = 1024), with the route that `factored=None` chooses; times and memory as in (a).

(d) End to end at H = 2, m = 4096, n = 6, t in [0, 20]: the order-4 NTH
    (`initial_kernels` with factored or dense directions, then `solve`) against the
    exact flow (Dopri8, rtol = atol = 1e-12, factored or dense stages), each a first
    call and one warm call.

(e) Fixed costs: one call of `nthdyn.hierarchy_kernel(net, X, 3)` and of
    `hierarchy_contraction(net, X, [c])` (input checks included) against plain nested
    `jax.jvp` of a Jacobian NTK, jitted, at depth 1, n = 6, m = 128 and 1024: best of
    200 alternating calls.

Run:

    python benchmarks/kernels.py            # full tables (about 15 minutes on 2 CPU cores)
    python benchmarks/kernels.py --quick    # tiny sizes, about a minute
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import nthdyn as nd  # noqa: E402
from nthdyn._kernels import base_kernel, derived_contraction, derived_kernel  # noqa: E402
from nthdyn._kernels._hierarchy import factoring_chosen  # noqa: E402

D = 8
ACTIVATION = "tanh"
METHODS = ("structured", "jacobian")
FULL = dict(orders=(3, 4), n=(4, 8, 16), m=(128, 512, 2048),
            widths=(1024, 4096, 16384), nth_n=8, t1=5.0, nth_orders=(2, 3, 4),
            factored=dict(depths=(1, 2, 3), n=(6, 32), m={6: 4096, 32: 1024}),
            end_to_end=dict(depth=2, n=6, m=4096, t1=20.0), overhead_m=(128, 1024))
QUICK = dict(orders=(3, 4), n=(4, 8), m=(32, 64),
             widths=(64, 256), nth_n=4, t1=1.0, nth_orders=(2, 3, 4),
             factored=dict(depths=(1, 2), n=(4, 8), m={4: 256, 8: 128}),
             end_to_end=dict(depth=2, n=4, m=256, t1=2.0), overhead_m=(128,))


def fixed(value: float) -> str:
    """About three significant digits, never in exponent form."""
    if value < 0.01:
        return f"{value:.4f}"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


#: Timed calls continue (beyond --reps, up to MAX_CALLS) until they add up to this.
MIN_TOTAL_S = 0.2
MAX_CALLS = 50


def timed(fn, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def wants_more(times, reps, budget):
    """Whether a method with timed calls `times` should make another call."""
    total = sum(times)
    if times and total >= budget:
        return False
    return len(times) < reps or (total < MIN_TOTAL_S and len(times) < MAX_CALLS)


def table(columns, rows):
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c)
              for i, c in enumerate(columns)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"
    print(line(columns))
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    for row in rows:
        print(line(row))
    print(flush=True)


# ---------------------------------------------------------------------------
# (a) K3 and K4: structured vs Jacobian base.


def compile_kernel(net, X, order, method):
    """`hierarchy_kernel(net, X, order, method=method)` as a compiled function of
    (parameters, X); returns it, the parameters and the compile time."""
    params, static = eqx.partition(net, eqx.is_inexact_array)
    base = base_kernel(net, method)

    def fn(params, X):
        return derived_kernel(eqx.combine(params, static), X, X, order, base, True)

    start = time.perf_counter()
    compiled = jax.jit(fn).lower(params, X).compile()
    return compiled, params, time.perf_counter() - start


def memory(compiled) -> int:
    stats = compiled.memory_analysis()
    return int(stats.temp_size_in_bytes + stats.output_size_in_bytes)


def predicted_time(done, order, method, n, m):
    """One call's time extrapolated from measured smaller configurations
    (`~ n^order m`), or None."""
    guesses = [t * (n / n0) ** order * (m / m0)
               for (r, meth, n0, m0), t in done.items()
               if r == order and meth == method and n0 <= n and m0 <= m]
    return max(guesses) if guesses else None


def kernel_row(order, n, m, args, done):
    data = nd.sphere_data(n, D, key=jax.random.key(0))
    net = nd.MLP(D, m, 1, ACTIVATION, key=jax.random.key(1))
    row = dict(order=order, n=n, m=m, P=nd.parameter_count(net))
    for method in METHODS:
        guess = predicted_time(done, order, method, n, m)
        if guess is not None and guess > args.max_time:
            row["skipped"] = (f"skipped: {method} predicted {guess:.0f} s a call "
                              f"> --max-time {args.max_time:g} s")
            return row
    compiled = {}
    for method in METHODS:
        fn, params, compile_s = compile_kernel(net, data.X, order, method)
        row[f"mem_{method}"] = memory(fn)
        row[f"compile_{method}"] = compile_s
        compiled[method] = fn
        if row[f"mem_{method}"] > args.max_memory * 1e9:
            row["skipped"] = (f"skipped: {method} needs {row[f'mem_{method}'] / 1e9:.1f} GB "
                              f"> --max-memory {args.max_memory:g} GB")
            return row
    results, times = {}, {}
    for method in METHODS:  # warm-up calls, which also give the results
        results[method], first = timed(compiled[method], params, data.X)
        times[method] = []
        row[f"first_{method}"] = first
    diff = jnp.max(jnp.abs(results["structured"] - results["jacobian"]))
    row["rel_diff"] = float(diff / jnp.max(jnp.abs(results["jacobian"])))
    while any(wants_more(times[k], args.reps, args.budget) for k in METHODS):
        for method in METHODS:  # alternate the methods
            if wants_more(times[method], args.reps, args.budget):
                times[method].append(timed(compiled[method], params, data.X)[1])
    for method in METHODS:
        row[f"t_{method}"] = min(times[method])
        row[f"calls_{method}"] = len(times[method])
        done[(order, method, n, m)] = row[f"t_{method}"]
    return row


def format_kernel_row(row, reps):
    cells = [f"K{row['order']}", str(row["n"]), str(row["m"]), f"{row['P']:,}"]
    if "skipped" in row:
        mems = [fixed(row[f"mem_{k}"] / 1e6) if f"mem_{k}" in row else "-" for k in METHODS]
        return cells + ["-", "-", "-"] + mems + ["-", row["skipped"]]

    def timing(method):
        text = fixed(row[f"t_{method}"] * 1e3)
        calls = row[f"calls_{method}"]
        return text if calls >= reps else f"{text} ({calls} call{'s' if calls > 1 else ''})"

    ms, mj = row["mem_structured"], row["mem_jacobian"]
    return cells + [
        timing("structured"), timing("jacobian"),
        f"{row['t_jacobian'] / row['t_structured']:.1f}",
        fixed(ms / 1e6), fixed(mj / 1e6), f"{mj / ms:.1f}", f"{row['rel_diff']:.1e}",
    ]


def fit_exponents(rows):
    """`log t = c + alpha log n + beta log m` per (order, method), least squares."""
    fits = []
    for order, method in itertools.product(sorted({r["order"] for r in rows}), METHODS):
        pts = [(r["n"], r["m"], r[f"t_{method}"]) for r in rows
               if r["order"] == order and "skipped" not in r]
        if len({p[0] for p in pts}) < 2 or len({p[1] for p in pts}) < 2:
            fits.append([f"K{order}", method, "-", "-", str(len(pts)), "too few sizes"])
            continue
        A = np.array([[1.0, np.log(n), np.log(m)] for n, m, _ in pts])
        b = np.log([t for _, _, t in pts])
        coef, *_ = np.linalg.lstsq(A, b, rcond=None)
        resid = b - A @ coef
        rms = float(np.sqrt(np.mean(resid**2)))
        fits.append([f"K{order}", method, f"{coef[1]:.2f}", f"{coef[2]:.2f}", str(len(pts)),
                     f"{rms:.2f}"])
    return fits


def kernels_table(sizes, args):
    print("(a) Full K3, K4 (eq. (10)): structured base vs Jacobian (J J^T) base, MLP depth 1")
    columns = ("kernel", "n", "m", "P", "t_struct [ms]", "t_jac [ms]", "t_jac/t_struct",
               "mem_struct [MB]", "mem_jac [MB]", "mem_jac/mem_struct", "max rel diff")
    print()
    rows, done = [], {}
    for order, m, n in itertools.product(sizes["orders"], sizes["m"], sizes["n"]):
        row = kernel_row(order, n, m, args, done)
        rows.append(row)
        print(f"  measured K{order} n={n} m={m}"
              + (f" ({row['skipped']})" if "skipped" in row else
                 f": compile {row['compile_structured']:.1f} s / {row['compile_jacobian']:.1f} s"),
              flush=True)
    print()
    table(columns, [format_kernel_row(r, args.reps) for r in rows])
    print("Fitted cost exponents, time ~ n^alpha m^beta (least squares over the measured rows;"
          " small sizes carry fixed overheads, so the exponents sit below the asymptotic ones)")
    print()
    table(("kernel", "method", "alpha (n)", "beta (m)", "rows", "rms log resid"),
          fit_exponents(rows))
    return rows


# ---------------------------------------------------------------------------
# (b) The NTH solve against the exact flow.


def repeat(fn, reps, budget):
    """The first call's time (compilation included) and the best warm time."""
    first = timed(fn)[1]
    times = []
    while wants_more(times, reps, budget):
        times.append(timed(fn)[1])
    return first, min(times)


def nth_table(sizes, args):
    n, t1 = sizes["nth_n"], sizes["t1"]
    saveat = np.linspace(0.0, t1, 11)
    data = nd.sphere_data(n, D, key=jax.random.key(0))
    print(f"(b) Truncated NTH (eq. (15)) vs exact flow, n = {n}, t in [0, {t1:g}], "
          f"MLP depth 1, {len(saveat)} save times")
    print()
    flow_rows, nth_rows = [], []
    for m in sizes["widths"]:
        net = nd.MLP(D, m, 1, ACTIVATION, key=jax.random.key(1))
        problem = nd.GradientFlowProblem(net, data, (0.0, t1))

        def run_flow():
            return nd.solve(problem, nd.Tsit5(), saveat=saveat, rtol=1e-10, atol=1e-10,
                            save_ntk=True)

        first, warm = repeat(run_flow, args.reps, args.budget)
        flow = run_flow()
        flow_rows.append([str(m), f"{nd.parameter_count(net):,}", fixed(first), fixed(warm),
                          str(flow.stats["num_steps"])])
        print(f"  flow m={m}: {warm:.2f} s", flush=True)
        for p in sizes["nth_orders"]:
            nth_problem = nd.NTHProblem(net, data, p, (0.0, t1))
            k_first, k_warm = repeat(lambda: nd.initial_kernels(nth_problem), args.reps, args.budget)
            kernels = nd.initial_kernels(nth_problem)
            o_first, o_warm = repeat(lambda: nd.solve(nth_problem, saveat=saveat, kernels=kernels),
                                     args.reps, args.budget)
            sol = nd.solve(nth_problem, saveat=saveat, kernels=kernels)
            err = float(nd.compare(flow, sol).err_f[-1])
            nth_rows.append([str(m), str(p), fixed(k_first), fixed(k_warm), fixed(o_first),
                             fixed(o_warm), str(sol.stats["num_steps"]), sol.solver,
                             str(sol.options["state_size"]), f"{err:.2e}"])
            print(f"  NTH m={m} p={p}: kernels {k_warm:.3f} s, ODE {o_warm:.3f} s", flush=True)
    print()
    print("Exact gradient flow (Tsit5, rtol = atol = 1e-10, save_ntk=True): "
          "first call (compilation included) and best warm call [s]")
    print()
    table(("m", "P", "first [s]", "warm [s]", "steps"), flow_rows)
    print("Truncated NTH: kernels = nthdyn.initial_kernels (K2..Kp at t = 0), "
          "ODE = nthdyn.solve with those kernels given; first call and best warm call [s]")
    print()
    table(("m", "p", "kernels first", "kernels warm", "ODE first", "ODE warm", "ODE steps",
           "solver", "state size", f"err_f(t={t1:g})"), nth_rows)
    widths = sizes["widths"]
    ratios = []
    for p in sizes["nth_orders"]:
        ode = {int(r[0]): float(r[5]) for r in nth_rows if r[1] == str(p)}
        ker = {int(r[0]): float(r[3]) for r in nth_rows if r[1] == str(p)}
        ratios.append([str(p), f"{ode[widths[-1]] / ode[widths[0]]:.2f}",
                       f"{ker[widths[-1]] / ker[widths[0]]:.1f}"])
    flow_warm = {int(r[0]): float(r[3]) for r in flow_rows}
    ratios.append(["flow", "-", f"{flow_warm[widths[-1]] / flow_warm[widths[0]]:.1f}"])
    print(f"Warm-time ratios, width {widths[-1]} over width {widths[0]} "
          f"(ODE: expected ~1; kernels and flow grow with m)")
    print()
    table(("p", "ODE ratio", "kernels (or flow) ratio"), ratios)


# ---------------------------------------------------------------------------
# (c) Factored against dense directions.

#: The kernels of table (c): (label, order, number of contracted slots).
FACTORED_KERNELS = (("K3", 3, 0), ("K4", 4, 0), ("K4[c,d]", 4, 2))


def compile_directions(net, X, order, contracted, factored):
    """`hierarchy_kernel` (or, with `contracted` slots, `hierarchy_contraction` with
    `contracted` vectors) with factored or dense directions, compiled as a function of
    (parameters, X, vectors)."""
    params, static = eqx.partition(net, eqx.is_inexact_array)
    base = base_kernel(net, "structured")
    vectors = tuple(jnp.linspace(-1.0, 1.0, X.shape[0]) ** (j + 1) for j in range(contracted))

    def fn(params, X, vectors):
        network = eqx.combine(params, static)
        if contracted:
            return derived_contraction(network, X, X, vectors, base, True, False, factored)
        return derived_kernel(network, X, X, order, base, True, False, factored)

    compiled = jax.jit(fn).lower(params, X, vectors).compile()
    return lambda: compiled(params, X, vectors), memory(compiled)


def factored_table(sizes, args):
    cfg = sizes["factored"]
    print("(c) Factored directions (grad f_b as rank-one terms g_k(x_b) u_k(x_b)^T on every "
          "map, batched) against dense parameter-sized directions, MLP tanh, d = 8")
    print()
    rows = []
    for depth, n, (label, order, contracted) in itertools.product(
            cfg["depths"], cfg["n"], FACTORED_KERNELS):
        m = cfg["m"][n]
        net = nd.MLP(D, m, depth, ACTIVATION, key=jax.random.key(1))
        X = nd.sphere_data(n, D, key=jax.random.key(0)).X
        columns = (order - 2) * n
        auto = factoring_chosen(net, base_kernel(net, "structured"), columns, None)
        row = [label, str(depth), str(n), str(m), "factored" if auto else "dense"]
        runs, mems, results = {}, {}, {}
        for factored in (False, True):
            runs[factored], mems[factored] = compile_directions(net, X, order, contracted,
                                                                factored)
            results[factored], first = timed(runs[factored])
        if first > args.max_time:
            rows.append(row + [fixed(first * 1e3) + " (1 call)"] + ["-"] * 5)
            continue
        times = {False: [], True: []}
        while any(wants_more(times[k], args.reps, args.budget) for k in times):
            for factored in times:
                if wants_more(times[factored], args.reps, args.budget):
                    times[factored].append(timed(runs[factored])[1])
        dense, fact = min(times[False]), min(times[True])
        diff = jnp.max(jnp.abs(results[True] - results[False])) / jnp.max(jnp.abs(results[False]))
        rows.append(row + [fixed(dense * 1e3), fixed(fact * 1e3), f"{dense / fact:.2f}",
                           fixed(mems[False] / 1e6), fixed(mems[True] / 1e6), f"{float(diff):.1e}"])
        print(f"  measured {label} H={depth} n={n} m={m}: {dense / fact:.2f}x", flush=True)
    print()
    table(("kernel", "H", "n", "m", "auto chooses", "t_dense [ms]", "t_factored [ms]",
           "dense/factored", "mem_dense [MB]", "mem_factored [MB]", "max rel diff"), rows)


# ---------------------------------------------------------------------------
# (d) The order-4 hierarchy against the exact flow, end to end.


def end_to_end_table(sizes, args):
    cfg = sizes["end_to_end"]
    depth, n, m, t1 = cfg["depth"], cfg["n"], cfg["m"], cfg["t1"]
    data = nd.sphere_data(n, D, key=jax.random.key(0))
    net = nd.MLP(D, m, depth, ACTIVATION, key=jax.random.key(1))
    saveat = np.linspace(0.0, t1, 11)
    print(f"(d) End to end, MLP depth {depth}, m = {m}, n = {n}, t in [0, {t1:g}]: the order-4 "
          "NTH (initial_kernels, then solve) against the exact flow (Dopri8, rtol = atol = "
          "1e-12)")
    print()
    flow_problem = nd.GradientFlowProblem(net, data, (0.0, t1))
    nth_problem = nd.NTHProblem(net, data, 4, (0.0, t1))

    def nth(factored):
        def run():
            kernels = nd.initial_kernels(nth_problem, factored=factored)
            return nd.solve(nth_problem, saveat=saveat, kernels=kernels)
        return run

    runs = {
        "exact flow, factored stages": lambda: nd.solve(
            flow_problem, nd.Dopri8(), saveat=saveat, rtol=1e-12, atol=1e-12, factored=True),
        "exact flow, dense stages": lambda: nd.solve(
            flow_problem, nd.Dopri8(), saveat=saveat, rtol=1e-12, atol=1e-12, factored=False),
        "NTH p = 4, factored directions": nth(True),
        "NTH p = 4, dense directions": nth(False),
    }
    rows, warm = [], {}
    for name, run in runs.items():
        first, warm[name] = repeat(run, 1, 0.0)
        rows.append([name, fixed(first), fixed(warm[name])])
        print(f"  {name}: {warm[name]:.2f} s", flush=True)
    flows = [k for k in runs if k.startswith("exact")]
    print()
    table(("computation", "first call [s]", "warm [s]")
          + tuple(f"{k.split(', ')[1]} flow / this" for k in flows),
          [row + [f"{warm[k] / warm[row[0]]:.1f}" for k in flows] for row in rows])


# ---------------------------------------------------------------------------
# (e) Fixed costs of a call: nthdyn's public functions against plain nested jvp.


LOOP_CALLS = 100


def overhead_table(sizes, args):
    n = 6
    X = nd.sphere_data(n, D, key=jax.random.key(0)).X
    c, d = jnp.linspace(-1.0, 1.0, n), jnp.cos(jnp.arange(n))
    print(f"(e) One call of a small kernel, MLP depth 1, n = {n}: nthdyn's public function (input "
          "checks included) against plain nested jax.jvp of a Jacobian NTK, jitted")
    print()
    rows = []
    for m in sizes["overhead_m"]:
        net = nd.MLP(D, m, 1, ACTIVATION, key=jax.random.key(1))
        params, static = eqx.partition(net, eqx.is_inexact_array)

        def ntk_of(p):
            J = jax.jacrev(lambda q: eqx.combine(q, static)(X))(p)
            blocks = [leaf.reshape(n, -1) for leaf in jax.tree_util.tree_leaves(J)]
            return sum(b @ b.T for b in blocks)

        @jax.jit
        def plain_K3(p):
            def along(x):
                direction = jax.grad(lambda q: eqx.combine(q, static).apply(x))(p)
                return jax.jvp(ntk_of, (p,), (direction,))[1]
            return jnp.moveaxis(jax.lax.map(along, X), 0, -1)

        def along(fn, c):
            """The derivative of `fn` along the moving field `grad (c . f)` (eq. (10))."""
            def derivative(p):
                direction = jax.grad(lambda q: jnp.dot(c, eqx.combine(q, static)(X)))(p)
                return jax.jvp(fn, (p,), (direction,))[1]
            return derivative

        plain_contraction = jax.jit(lambda p, c: along(ntk_of, c)(p))
        plain_contraction2 = jax.jit(lambda p, c, d: along(along(ntk_of, c), d)(p))
        pairs = {"K3": (lambda: nd.hierarchy_kernel(net, X, 3), lambda: plain_K3(params)),
                 "K3[c]": (lambda: nd.hierarchy_contraction(net, X, [c]),
                           lambda: plain_contraction(params, c)),
                 "K4[c,d]": (lambda: nd.hierarchy_contraction(net, X, [c, d]),
                             lambda: plain_contraction2(params, c, d))}
        for label, (ours, plain) in pairs.items():
            diff = float(jnp.max(jnp.abs(ours() - plain())))
            single, loop = {0: [], 1: []}, {0: [], 1: []}
            for _ in range(max(args.reps, 200)):
                for k, fn in enumerate((ours, plain)):
                    single[k].append(timed(fn)[1])
            for _ in range(20):
                for k, fn in enumerate((ours, plain)):
                    loop[k].append(timed(lambda: [fn() for _ in range(LOOP_CALLS)])[1] / LOOP_CALLS)
            (s_ours, s_plain), (l_ours, l_plain) = ([min(t[0]), min(t[1])] for t in (single, loop))
            rows.append([label, str(m), fixed(s_ours * 1e6), fixed(s_plain * 1e6),
                         f"{s_plain / s_ours:.2f}", fixed(l_ours * 1e6), fixed(l_plain * 1e6),
                         f"{l_plain / l_ours:.2f}", f"{diff:.1e}"])
    table(("kernel", "m", "one call: nthdyn [us]", "plain [us]", "plain/nthdyn",
           "in a loop: nthdyn [us]", "plain [us]", "plain/nthdyn", "max abs diff"), rows)
    print(f"(one call: best of {max(args.reps, 200)} calls, each waited for; in a loop: best of "
          f"20 runs of {LOOP_CALLS} calls back to back, waited for at the end, per call)")


def header(args, quick):
    device = jax.devices()[0]
    found = nd.versions()
    print("Benchmark: NTH kernels K3, K4 and the truncated NTH (nthdyn)")
    print(f"  backend: {jax.default_backend()}, device: {device.device_kind} ({device}), "
          f"CPU cores: {os.cpu_count()}, machine: {platform.machine()}")
    print(f"  float64: {'on' if jax.config.jax_enable_x64 else 'OFF'}; versions: "
          + ", ".join(f"{k} {v}" for k, v in found.items() if k not in ("xarray", "netCDF4")))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load:
        print(f"  load average at start: {load[0]:.1f} (1 min), {load[1]:.1f} (5 min)")
    print(f"  network: MLP (Huang-Yau eq. (1)-(2)), {ACTIVATION}, d = {D}, inputs on the unit "
          f"sphere; depth 1 in tables (a), (b){'; --quick sizes' if quick else ''}")
    print(f"  time: best wall time of >= {args.reps} calls (more, up to {MAX_CALLS}, until they add "
          f"up to {MIN_TOTAL_S:g} s) after one warm-up call; memory: XLA compiled memory "
          "analysis, temp + output bytes (1 MB = 1e6 bytes)")
    print()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (about a minute)")
    parser.add_argument("--reps", type=int, default=5, help="timed calls at least (default 5)")
    parser.add_argument("--budget", type=float, default=20.0, metavar="SECONDS",
                        help="stop timing a kernel method once its calls add up to this "
                             "(at least one call; default 20 s)")
    parser.add_argument("--max-time", type=float, default=60.0, metavar="SECONDS",
                        help="skip a kernel configuration predicted to take longer a call "
                             "(default 60 s)")
    parser.add_argument("--max-memory", type=float, default=8.0, metavar="GB",
                        help="skip a kernel configuration whose compiled memory is larger "
                             "(default 8 GB)")
    parser.add_argument("--only", choices=("kernels", "nth", "factored", "end-to-end", "overhead"),
                        default=None, help="run only table (a) 'kernels', (b) 'nth', "
                        "(c) 'factored', (d) 'end-to-end' or (e) 'overhead'")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error(f"--reps={args.reps}: must be >= 1")
    sizes = QUICK if args.quick else FULL
    header(args, args.quick)
    start = time.perf_counter()
    if args.only in (None, "kernels"):
        kernels_table(sizes, args)
    if args.only in (None, "nth"):
        nth_table(sizes, args)
    if args.only in (None, "factored"):
        factored_table(sizes, args)
    if args.only in (None, "end-to-end"):
        end_to_end_table(sizes, args)
    if args.only in (None, "overhead"):
        overhead_table(sizes, args)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
