"""Benchmark: nthdyn's exact gradient flow against a plain diffrax flow of the same network.

The flow `d theta/dt = -grad L(theta)` (Huang & Yau eq. (3)-(5)) of the Huang-Yau MLP
(tanh, `d = 8`, `n = 6` inputs on the unit sphere, N(0, 1) labels, depth `H`), from
t = 0 to 20, Dopri8 at rtol = atol = 1e-12 with the Euclidean norm over all parameters,
steps clipped to the 5 save times, the outputs saved there:

- `plain`: what one writes with diffrax: `diffeqsolve(ODETerm(-grad L), Dopri8(),
  PIDController(rtol, atol, norm=optimistix.two_norm), ClipStepSizeController(step_ts),
  SaveAt(ts, fn=outputs))`, every stage a dense parameter-sized vector;
- `nthdyn`: `nthdyn.solve(GradientFlowProblem(...), nthdyn.Dopri8(), rtol=atol=1e-12,
  saveat=ts)`, which keeps the Runge-Kutta stages as low-rank factors where that pays
  (`factored=None`, the automatic rule; `nthdyn/_problems/_factored.py`).

Each route runs in its own child process (so that its peak resident memory is its
own): one call to compile and run, then the best of `--reps` warm calls. Columns: `P`
(parameters), `steps` (accepted + rejected), `first` (compile + run) and `warm`
[s], `peak RSS` [GB] (`ru_maxrss` of the child; on a GPU also `peak device`, the
device allocator's `peak_bytes_in_use`), the speed-up `plain / nthdyn` of the
warm times, and `max |df|`, the largest difference of the saved outputs of the two
routes (the same tableau and controller: rounding only).

Run:

    python benchmarks/flow.py                 # m in {1024, 2048, 4096}, H = 2 (several minutes)
    python benchmarks/flow.py --widths 16384  # the widest network that fits (see --help)
    python benchmarks/flow.py --quick         # m in {64, 128}: seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

T1 = 20.0
SAVES = 5


def child(route: str, width: int, depth: int, reps: int) -> dict:
    """Run one route in this process and return its numbers."""
    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optimistix as optx

    import nthdyn as nd
    from nthdyn._network import parameter_count, trainable

    data = nd.sphere_data(n=6, d=8, key=jax.random.key(0))
    net = nd.MLP(8, width, depth, "tanh", key=1)
    ts = np.linspace(0.0, T1, SAVES)

    if route == "nthdyn":
        problem = nd.GradientFlowProblem(net, data, (0.0, T1))

        def run():
            sol = nd.solve(problem, nd.Dopri8(), saveat=ts, rtol=1e-12, atol=1e-12)
            return sol.f, sol.stats["num_steps"]
    else:
        params, static = trainable(net)

        def field(t, p, args):
            loss = lambda q: 0.5 * jnp.mean((eqx.combine(q, static)(data.X) - data.y) ** 2)  # noqa: E731
            return jax.tree_util.tree_map(jnp.negative, jax.grad(loss)(p))

        @eqx.filter_jit
        def solve(p):
            controller = diffrax.ClipStepSizeController(
                diffrax.PIDController(rtol=1e-12, atol=1e-12, norm=optx.two_norm),
                step_ts=jnp.asarray(ts))
            sol = diffrax.diffeqsolve(
                diffrax.ODETerm(field), diffrax.Dopri8(), 0.0, T1, None, p,
                saveat=diffrax.SaveAt(ts=jnp.asarray(ts),
                                      fn=lambda t, y, args: eqx.combine(y, static)(data.X)),
                stepsize_controller=controller, max_steps=100_000)
            return sol.ys, sol.stats["num_steps"]

        def run():
            return solve(params)

    start = time.perf_counter()
    f, steps = jax.block_until_ready(run())
    first = time.perf_counter() - start
    warm = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(run())
        warm.append(time.perf_counter() - start)
    device = jax.devices()[0].memory_stats()  # None on the CPU
    return {"P": parameter_count(net), "steps": int(steps), "first": first,
            "warm": min(warm) if warm else float("nan"),
            "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
            "device_gb": device["peak_bytes_in_use"] / 1e9 if device else None,
            "f": np.asarray(f).tolist()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--reps", type=int, default=2,
                        help="warm calls per route, the best taken (0: the first call only)")
    parser.add_argument("--routes", nargs="+", default=["plain", "nthdyn"],
                        choices=["plain", "nthdyn"])
    parser.add_argument("--quick", action="store_true", help="m in {64, 128}, one warm call")
    parser.add_argument("--child", nargs=4, metavar=("ROUTE", "WIDTH", "DEPTH", "REPS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        route, width, depth, reps = args.child
        print(json.dumps(child(route, int(width), int(depth), int(reps))))
        return
    if args.quick:
        args.widths, args.reps = [64, 128], 1

    import jax
    import numpy as np

    import nthdyn as nd

    print(f"nthdyn {nd.__version__}, JAX {jax.__version__} on {jax.default_backend()}, "
          f"{os.cpu_count()} CPU cores, Python {platform.python_version()}; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"MLP depth {args.depth}, tanh, d = 8, n = 6; Dopri8, rtol = atol = 1e-12, l2 norm, "
          f"t in [0, {T1:g}], {SAVES} saves\n")
    on_device = jax.default_backend() != "cpu"  # then also the device's peak memory
    header = (f"{'m':>6} {'P':>11} | {'route':>6} {'steps':>5} {'first [s]':>9} {'warm [s]':>9} "
              f"{'peak RSS [GB]':>13}{' peak device [GB]' if on_device else ''} | "
              f"{'speed-up':>8} {'max |df|':>9}")
    print(header)
    print("-" * len(header))
    for width in args.widths:
        results = {}
        for route in args.routes:
            done = subprocess.run(
                [sys.executable, __file__, "--child", route, str(width), str(args.depth),
                 str(args.reps)], capture_output=True, text=True)
            if done.returncode:
                reason = (done.stderr.strip().splitlines() or ["killed"])[-1][:60]
                print(f"{width:6d} {'':>11} | {route:>6} failed: {reason}")
                continue
            results[route] = json.loads(done.stdout.strip().splitlines()[-1])
        for route, r in results.items():
            extra = ""
            if route == "nthdyn" and "plain" in results and args.reps:
                diff = np.abs(np.asarray(r["f"]) - np.asarray(results["plain"]["f"])).max()
                extra = f"{results['plain']['warm'] / r['warm']:8.2f} {diff:9.1e}"
            device = f" {r['device_gb']:16.2f}" if on_device else ""
            print(f"{width:6d} {r['P']:11d} | {route:>6} {r['steps']:5d} {r['first']:9.2f} "
                  f"{r['warm']:9.2f} {r['rss_gb']:13.2f}{device} | {extra}", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
