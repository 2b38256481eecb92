"""Benchmark: the structured NTK against the plain-JAX Jacobian product.

Compares, for the Huang-Yau MLP (eq. (1)-(2), tanh, inputs on the unit sphere
in R^8), two ways of computing the NTK K2 = <grad f(x_a), grad f(x_b)> (eq. (7))
on n training points:

- `nthdyn.ntk_structured(net, X)`: the layer-factor algorithm
  `K2 = sum_k (G_k G_k^T) * (U_k U_k^T)`, one forward and one backward pass per
  input, `O(n m^2 H + n^2 m H)` time, `O(n m H + n^2)` memory;
- `nthdyn.ntk_jacobian(net, X)`: the full Jacobian `J` (n x P) and `J J^T`,
  `O(n^2 P)` time and `O(n P)` memory, with `P ~ H m^2` parameters.

For every configuration (n, m, H) both functions are jitted (`jax.jit` on a
function of the parameters and inputs), lowered and compiled once, and then
measured side by side in the same run:

- time: the median wall time of `--reps` calls of the compiled function (after
  one warm-up call), each call ended with `block_until_ready`. The calls of the
  two routes alternate, so that load from other processes hits both alike. A
  route whose timed calls already add up to `--budget` seconds makes no more
  calls (the largest Jacobian takes about a minute a call on 2 CPU cores); the
  table then shows the number of calls, e.g. `59808 (1 call)`.
- memory: XLA's compiled memory analysis of the jitted function,
  `temp_size_in_bytes + argument_size_in_bytes + output_size_in_bytes`
  (`jax.jit(fn).lower(...).compile().memory_analysis()`): the bytes XLA's buffer
  assignment reserves for the call, inputs (parameters and X) and output
  included. It is deterministic (it does not depend on the allocator or on
  other processes) and it is known before the function runs; it is not a
  measurement of the process's resident memory.
- max rel diff: `max_ab |K_struct - K_jac| / max_ab |K_jac|`, the agreement of
  the two results relative to the size of the kernel.

A configuration whose Jacobian route would need more memory than `--max-memory`
(by the compiled analysis) is not run, and its row says why.

Run:

    python benchmarks/ntk.py            # the full table (a few minutes on 2 CPU cores)
    python benchmarks/ntk.py --quick    # tiny sizes, seconds
    python benchmarks/ntk.py --reps 9   # more repetitions per timing
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import nthdyn as nd  # noqa: E402

D = 8
ACTIVATION = "tanh"
FULL = dict(n=(64, 256), m=(256, 1024), H=(1, 3))
QUICK = dict(n=(8, 16), m=(16, 32), H=(1, 2))
COLUMNS = ("n", "m", "H", "P", "t_struct [ms]", "t_jac [ms]", "speedup",
           "mem_struct [MB]", "mem_jac [MB]", "mem ratio", "max rel diff")


def compiled_memory(compiled) -> int:
    """temp + argument + output bytes of XLA's buffer assignment."""
    stats = compiled.memory_analysis()
    return int(stats.temp_size_in_bytes + stats.argument_size_in_bytes
               + stats.output_size_in_bytes)


def compile_route(kernel, static, params, X):
    """Jit `kernel(network, X)` as a function of (parameters, X), lower and compile."""
    def fn(params, X):
        return kernel(eqx.combine(params, static), X)

    return jax.jit(fn).lower(params, X).compile()


def wall_time(compiled, params, X) -> float:
    start = time.perf_counter()
    jax.block_until_ready(compiled(params, X))
    return time.perf_counter() - start


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux), or None."""
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def benchmark(n: int, m: int, H: int, reps: int, max_memory: float, budget: float) -> dict:
    data = nd.sphere_data(n, D, key=jax.random.key(0))
    net = nd.MLP(in_size=D, width=m, depth=H, activation=ACTIVATION, key=jax.random.key(1))
    params, static = eqx.partition(net, eqx.is_array)
    row = dict(n=n, m=m, H=H, P=nd.parameter_count(net))

    struct = compile_route(nd.ntk_structured, static, params, data.X)
    jac = compile_route(nd.ntk_jacobian, static, params, data.X)
    row["mem_struct"] = compiled_memory(struct)
    row["mem_jac"] = compiled_memory(jac)
    if row["mem_jac"] > max_memory:
        row["skipped"] = (f"skipped (the Jacobian route needs {fixed(row['mem_jac'] / 1e9)} GB"
                          f" > --max-memory {fixed(max_memory / 1e9)} GB)")
        return row

    # Warm-up calls, which also give the results to compare.
    K_struct = jax.block_until_ready(struct(params, data.X))
    K_jac = jax.block_until_ready(jac(params, data.X))
    row["rel_diff"] = float(jnp.max(jnp.abs(K_struct - K_jac)) / jnp.max(jnp.abs(K_jac)))
    del K_struct, K_jac

    times = {"struct": [], "jac": []}
    for _ in range(reps):  # alternate the two routes
        for name, compiled in (("struct", struct), ("jac", jac)):
            if not times[name] or sum(times[name]) < budget:
                times[name].append(wall_time(compiled, params, data.X))
    for name, values in times.items():
        row[f"t_{name}"] = statistics.median(values)
        row[f"calls_{name}"] = len(values)
    return row


def fixed(value: float) -> str:
    """A number with about three significant digits, never in exponent form."""
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def format_row(row: dict, reps: int) -> list[str]:
    cells = [str(row["n"]), str(row["m"]), str(row["H"]), f"{row['P']:,}"]
    if "skipped" in row:
        cells += ["-", "-", "-", fixed(row["mem_struct"] / 1e6), fixed(row["mem_jac"] / 1e6),
                  f"{row['mem_jac'] / row['mem_struct']:.0f}", row["skipped"]]
        return cells
    def timing(name):
        text = fixed(row[f"t_{name}"] * 1e3)
        calls = row[f"calls_{name}"]
        return text if calls == reps else f"{text} ({calls} call{'s' if calls > 1 else ''})"

    return cells + [
        timing("struct"),
        timing("jac"),
        f"{row['t_jac'] / row['t_struct']:.1f}",
        fixed(row["mem_struct"] / 1e6),
        fixed(row["mem_jac"] / 1e6),
        f"{row['mem_jac'] / row['mem_struct']:.0f}",
        f"{row['rel_diff']:.1e}",
    ]


WIDTHS = [max(len(c), 9) for c in COLUMNS]


def table_line(cells) -> str:
    return "| " + " | ".join(cell.rjust(w) for cell, w in zip(cells, WIDTHS)) + " |"


def print_header() -> None:
    print(table_line(COLUMNS))
    print("|" + "|".join("-" * (w + 1) + ":" for w in WIDTHS) + "|", flush=True)


def header(reps: int, budget: float, quick: bool) -> None:
    found = nd.versions()
    device = jax.devices()[0]
    print("NTK benchmark: nthdyn.ntk_structured vs nthdyn.ntk_jacobian (J J^T)")
    print(f"  backend: {jax.default_backend()}, device: {device.device_kind} ({device}), "
          f"CPU cores: {os.cpu_count()}, machine: {platform.machine()}")
    print(f"  float64: {'on' if jax.config.jax_enable_x64 else 'OFF'}; versions: "
          + ", ".join(f"{k} {v}" for k, v in found.items() if k not in ("scipy", "xarray", "netCDF4")))
    print(f"  network: MLP (Huang-Yau eq. (1)-(2)), {ACTIVATION}, d = {D}, inputs on the unit sphere"
          f"{'; --quick sizes' if quick else ''}")
    print(f"  time: median wall time of {reps} calls of the compiled function after one warm-up call"
          f" (fewer, shown as '(k calls)', once a route's calls add up to {budget:g} s)")
    print("  memory: XLA compiled memory analysis, temp + argument + output bytes (1 MB = 1e6 bytes)")
    print("  speedup = t_jac / t_struct; mem ratio = mem_jac / mem_struct; "
          "max rel diff = max|K_struct - K_jac| / max|K_jac|")
    print()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--reps", type=int, default=5,
                        help="timed calls per route and configuration (default 5)")
    parser.add_argument("--budget", type=float, default=20.0, metavar="SECONDS",
                        help="stop timing a route once its timed calls add up to this "
                             "(at least one call; default 20 s)")
    parser.add_argument("--max-memory", type=float, default=None, metavar="GB",
                        help="skip a configuration whose Jacobian route needs more than this "
                             "(default: 60%% of the memory available at start)")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error(f"--reps={args.reps}: must be >= 1")
    if args.max_memory is not None:
        max_memory = args.max_memory * 1e9
    else:
        available = available_memory()
        max_memory = 0.6 * available if available else float("inf")

    header(args.reps, args.budget, args.quick)
    sizes = QUICK if args.quick else FULL
    start = time.perf_counter()
    print_header()
    for n, m, H in itertools.product(sizes["n"], sizes["m"], sizes["H"]):
        print(table_line(format_row(benchmark(n, m, H, args.reps, max_memory, args.budget), args.reps)), flush=True)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
