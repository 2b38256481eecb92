"""Truncation error of the NTH on real images (Huang & Yau, Theorem 2.6): n = 128 digits.

`cases/truncation_error.py` on n = 6 sphere points, here on n = 128 of scikit-learn's 8x8
handwritten digits (`nd.digits_data`: d = 64, centred, on the unit sphere; label the digit
standardised over 0..9). For every width m and seed, the exact gradient flow (eq. 3; Dopri8,
rtol = atol = 1e-12) and the p-level truncated hierarchy (eq. 15) start from the same H = 1 tanh
network, and

    err_f = ||f(t) - f~(t)||_2   (eq. 18)        err_K2 = max_ab |K2(t) - K~2(t)|   (eq. 19)

are recorded; theory (as on the sphere): err ~ m^-1 for p = 2 and 3, m^-2 for p = 4.

Orders 2 and 3 use the full kernels K2 (n^2) and K3 (n^3, 17 MB at n = 128), computed once per
network (`nd.initial_kernels` at order 3, `kernels=` for order 2). The full K4 (n^4 = 2.1 GB) costs
about (3n)^2 = 1.5e5 K2 evaluations, 80 s at m = 256 and about 22 min at m = 4096 on two cores, so
order 4 is solved matrix-free: with R = int_0^t r, frozen K4 gives exactly

    K~3(t) = K3 - 1/n K4[R],        K~2(t) = K2 - 1/n K3[R] + 1/n^2 M,      dM/dt = K4[r, R],

(slot 3 contracted with r, slot 4 with R): `NTHProblem(..., 4)` solved with `reduced=True`, the
state (r, R, M) of n^2 + 2n numbers, each right-hand side one matrix-free contraction of K4 (about
9 K2 evaluations; the tensor K4 is never formed). At small n it agrees with the full-tensor system
(checked here and in tests/test_nth.py).

Exponents of m are fitted on the geometric mean over seeds with a bootstrap-over-seeds 95%
interval, and compared with the theory and with the sphere (docs/nth_cases.md). The time and
memory of each order are printed and stored. Writes digits_truncation.nc and digits_truncation.png.
"""

import resource
import time
from pathlib import Path

import jax
import numpy as np
import xarray as xr

import nthdyn as nd

ORDERS = (2, 3, 4)
THEORY_WIDTH = {2: -1.0, 3: -1.0, 4: -2.0}  # exponent of m (Theorem 2.6, scales (11)-(12))
#: Fitted exponents on the sphere (docs/nth_cases.md, H = 1 tanh, t = 1), for comparison.
SPHERE_WIDTH = {"err_f": {2: -1.08, 3: -1.24, 4: -1.97}, "err_K2": {2: -1.02, 3: -1.15, 4: -1.94}}
MASTER_SEED = 2020
RTOL = 1e-12


def settings(quick):
    if quick:
        return dict(n=4, widths=[16, 24, 32], seeds=2, times=[1.0], t_fit=1.0, n_boot=200)
    return dict(n=128, widths=[256, 512, 1024, 2048, 4096], seeds=6, times=[0.25, 0.5, 1.0],
                t_fit=1.0, n_boot=2000)


def timed(fn):
    start = time.perf_counter()
    value = jax.block_until_ready(fn())
    return value, time.perf_counter() - start


def flow_and_errors(net, data, times, quick=False):
    """The exact flow, and err_f, err_K2 of orders 2, 3, 4 against it, with the seconds each
    order takes: its initial kernels (K2; K2 and K3 for orders 3 and 4) and its solve. Order 4
    is the matrix-free (r, R, M) system (`reduced=True`; with `quick`, n is tiny and the automatic
    choice, the full tensor, saves compiling the matrix-free system once per width)."""
    span = (0.0, float(times[-1]))
    flow, flow_s = timed(lambda: nd.solve(nd.GradientFlowProblem(net, data, span), nd.Dopri8(),
                                          saveat=times, rtol=RTOL, atol=RTOL, save_ntk=True))
    _, k2_s = timed(lambda: nd.initial_kernels(nd.NTHProblem(net, data, 2, span)))
    top = 4 if quick else 3  # the full K4 only where it is tiny (quick)
    kernels, k3_s = timed(lambda: nd.initial_kernels(nd.NTHProblem(net, data, top, span)))
    compared, seconds = [], []
    for p in ORDERS:
        problem = nd.NTHProblem(net, data, p, span)
        nth, solve_s = timed(lambda problem=problem: nd.solve(
            problem, saveat=times, kernels=kernels, rtol=RTOL, atol=RTOL,
            reduced=True if problem.order == 4 and not quick else None))
        compared.append(nd.compare(flow, nth)[["err_f", "err_K2"]])
        seconds.append(solve_s + (k2_s if p == 2 else k3_s))  # K2 alone; K2 and K3
    ds = xr.concat(compared, dim="order", combine_attrs="drop")
    ds["order_seconds"] = ("order", np.array(seconds), {"long_name": "wall time of the order's "
                                                        "kernels and solve", "units": "s"})
    ds["flow_seconds"] = ((), flow_s, {"long_name": "wall time of the exact flow", "units": "s"})
    return ds


def check_matrix_free(n=5, width=32):
    """The matrix-free order 4 against `NTHProblem(order=4)` on the full K4, small n."""
    data = nd.digits_data(n, key=1)
    problem = nd.NTHProblem(nd.MLP(data.d, width, 1, "tanh", key=3), data, 4, (0.0, 1.0))
    full, free = (nd.solve(problem, saveat=[0.5, 1.0], rtol=RTOL, atol=RTOL, reduced=reduced)
                  for reduced in (False, True))
    return (float(np.abs(np.asarray(full.f) - np.asarray(free.f)).max()),
            float(np.abs(np.asarray(full.ntk) - np.asarray(free.ntk)).max()))


def run(out: Path, quick: bool, *, executor=None):
    cfg = settings(quick)
    times = np.asarray(cfg["times"])
    data = nd.digits_data(cfg["n"], key=0)
    diff_f, diff_K2 = (np.nan, np.nan) if quick else check_matrix_free()  # tests/test_digits.py
    print(f"  matrix-free order 4 vs NTHProblem(order=4) with the full K4 (n=5, m=32): "
          f"max |df~| = {diff_f:.1e}, max |dK~2| = {diff_K2:.1e}", flush=True)

    def member_errors(member):
        return flow_and_errors(member.network, member.data, times, quick)

    net = nd.MLP(data.d, cfg["widths"][0], 1, "tanh", key=0)
    ensemble = nd.EnsembleProblem(nd.GradientFlowProblem(net, data, (0.0, times[-1])),
                                  seeds=range(cfg["seeds"]), widths=cfg["widths"],
                                  master_seed=MASTER_SEED, output=member_errors, vmap=False)
    store = out / f"digits_truncation{'_quick' if quick else ''}.store"
    ds = nd.solve(ensemble, store=store, executor=executor, progress=not quick)
    failed = int((ds.retcode != 0).sum())
    if failed:
        print(f"  WARNING: {failed} members failed and are left out")
    for name in ("err_f", "err_K2"):
        ds[name] = ds[name].where(ds.retcode == 0)
        ds[name].attrs.update(units="1")
    median = ds.err_f.sel(time=cfg["t_fit"]).median("seed")
    print("  median over seeds of err_f(t=1) vs m: " + "; ".join(
        f"p={p}: " + " ".join(f"{v:.1e}" for v in median.sel(order=p).values) for p in ORDERS))

    # Solver accuracy: the widest network's flow against a reference at a 10x tighter tolerance
    # (left out of --quick, which is compile-bound).
    net = nd.MLP(data.d, cfg["widths"][-1], 1, "tanh", key=nd.member_key(0, MASTER_SEED))
    flow = [np.asarray(nd.solve(nd.GradientFlowProblem(net, data, (0.0, times[-1])), nd.Dopri8(),
                                saveat=times, rtol=tol, atol=tol).f)
            for tol in ((RTOL, RTOL / 10) if not quick else ())]
    solver_error = float(np.abs(flow[0] - flow[1]).max()) if flow else np.nan
    ds.attrs["flow_solver_error_f"] = solver_error
    print(f"  flow solver check (m={cfg['widths'][-1]}): |f(rtol {RTOL:g}) - f(rtol {RTOL / 10:g})| <= "
          f"{solver_error:.1e}; smallest err_f there at t = {cfg['t_fit']:g}: "
          f"{float(ds.err_f.sel(width=cfg['widths'][-1], time=cfg['t_fit']).min()):.1e}")

    geometric_mean = lambda a, dim: np.exp(np.log(a).mean(dim))  # noqa: E731
    rows = []
    import pandas as pd

    for name in ("err_f", "err_K2"):
        fit = nd.fit_power_law(ds[name].sel(time=cfg["t_fit"]), dim="width", interval="bootstrap",
                               sample_dim="seed", statistic=geometric_mean, n_boot=cfg["n_boot"])
        theory = xr.DataArray([THEORY_WIDTH[p] for p in ORDERS], dims="order", coords={"order": list(ORDERS)})
        table = nd.compare_exponents(fit, theory, tolerance=0.25).reset_index()
        table.insert(0, "quantity", f"{name} vs m (t={cfg['t_fit']:g})")
        table["sphere (n=6)"] = [SPHERE_WIDTH[name][p] for p in table["order"]]
        rows.append(table)
        for var in ("exponent", "exponent_low", "exponent_high"):
            ds[f"{name}_width_{var}"] = fit[var]
    summary = pd.concat(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))

    widest = ds.sel(width=cfg["widths"][-1])
    seconds = widest.order_seconds.median("seed")
    n = cfg["n"]
    memory = {2: 8 * n**2, 3: 8 * n**3, 4: 8 * n**3 + 8 * n**2}  # tensors held by each order
    for p in ORDERS:
        print(f"  order {p}: {float(seconds.sel(order=p)):.1f} s at m={cfg['widths'][-1]} (kernels + "
              f"solve, median over seeds); kernels held {memory[p] / 1e6:.3g} MB"
              + (f" (the full K4 would be {8 * n**4 / 1e9:.2f} GB)" if p == 4 else ""))
    print(f"  exact flow: {float(widest.flow_seconds.median('seed')):.1f} s at m={cfg['widths'][-1]}; "
          f"peak memory of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    ds["kernel_bytes"] = ("order", [memory[p] for p in ORDERS],
                          {"long_name": "bytes of the kernel tensors each order holds", "units": "1"})
    ds.attrs.update(nd.provenance(
        "NTH truncation error vs width on 128 digits images (Theorem 2.6)",
        {**cfg, "orders": ORDERS, "data": "sklearn load_digits, classes 0-9, centred, unit sphere",
         "labels": "standardized digit", "depth": 1, "activation": "tanh", "flow_solver": "Dopri8",
         "rtol": RTOL, "order4": "matrix-free (f, R, M) state", "master_seed": MASTER_SEED,
         "data_seed": 0, "matrix_free_check_f": diff_f, "matrix_free_check_K2": diff_K2}))
    ds.attrs["exponent_table"] = summary.to_csv(index=False)
    nc = nd.write_netcdf(ds, out / "digits_truncation.nc")
    png = plot(ds, out / "digits_truncation.png", cfg)
    print(f"  wrote {nc} and {png}")
    return ds


def plot(ds, path, cfg):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    geo = lambda a: np.exp(np.log(a).mean("seed"))  # noqa: E731
    for ax, name in zip(axes, ("err_f", "err_K2")):
        sub = ds[name].sel(time=cfg["t_fit"])
        for p in ORDERS:
            curve = geo(sub.sel(order=p))
            exponent = float(ds[f"{name}_width_exponent"].sel(order=p))
            line, = ax.loglog(curve.width, curve, "o-",
                              label=f"p = {p}: fit {exponent:.2f} (theory {THEORY_WIDTH[p]:g})")
            ax.loglog(np.repeat(sub.width.values[:, None], sub.sizes["seed"], 1),
                      sub.sel(order=p).transpose("width", "seed"), ".", color=line.get_color(), alpha=0.3)
        ax.set(xlabel="width m", ylabel=f"{name} at t = {cfg['t_fit']:g}",
               title=f"{name} vs width, n = {cfg['n']} digits, H = 1, tanh")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Exact gradient flow vs truncated NTH on real images (geometric mean over seeds)")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


if __name__ == "__main__":
    nd.run_case(run, __doc__)
