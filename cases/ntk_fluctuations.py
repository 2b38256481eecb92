"""NTK fluctuations at initialization: the seed-to-seed spread of K2 falls like m^(-1/2).

Huang & Yau eq. (11) at r = 2: ||K2_0 - frak K2||_inf <~ (ln m)^C / sqrt(m). At initialization
the NTK of a width-m network is its deterministic infinite-width limit frak K2 plus a random
fluctuation of order 1/sqrt(m), so the standard deviation of K2[a, b] over random
initializations (seeds) should fall like m^(-1/2).

For H = 1 and 2 hidden layers (tanh, Huang-Yau parametrization eq. 1-2, sw = sa = 1) and
n = 8 points on the unit sphere in R^4, K2 (eq. 7) is computed at t = 0 for 32 seeds and the
widths m = 64 ... 4096: an EnsembleProblem with an output function, seeds vmapped, points
stored as they finish (rerunning resumes; --workers N runs the points on Dask). The
fluctuation sigma(m) is the root mean square, over the 36 entries a <= b, of the seed
standard deviation of K2[a, b]. The exponent k of sigma ~ m^k is fitted in log-log with a
95% interval two ways: a t-interval over the widths, and a bootstrap over seeds. Theory:
k = -1/2; a fit passes within 0.1 of it. Each entry's own exponent is fitted too.

Writes ntk_fluctuations.nc and ntk_fluctuations.png; the sweep store
ntk_fluctuations.store/ (ntk_fluctuations_quick.store/ with --quick) keeps every point.
"""

from pathlib import Path

import jax
import numpy as np
import xarray as xr

import nthdyn as nd

THEORY = -0.5  # eq. (11), r = 2: fluctuation O(m^(-1/2))
TOLERANCE = 0.1


def settings(quick: bool) -> dict:
    if quick:
        return dict(widths=[16, 32, 64], seeds=8, depths=[1], n_boot=200)
    return dict(widths=[64, 128, 256, 512, 1024, 2048, 4096], seeds=32, depths=[1, 2],
                n_boot=2000)


def kernel_at_init(problem):
    """The member's output: K2 of its network at t = 0 (a pure JAX function, so the
    seeds of one width run under vmap)."""
    K2 = nd.ntk_structured(problem.network, problem.data.X)
    return {"K2": (("sample", "sample_b"), K2,
                   {"long_name": "neural tangent kernel K2(x_a, x_b) at t = 0 (eq. 7)",
                    "units": "1"})}


def fluctuation(K2: xr.DataArray, dim: str = "seed") -> xr.DataArray:
    """RMS over entries a <= b of the standard deviation over `dim` of K2[a, b]."""
    upper = K2["sample"] <= K2["sample_b"]
    variance = K2.var(dim, ddof=1).where(upper)
    return np.sqrt(variance.mean(("sample", "sample_b")))


def run(out: Path, quick: bool, *, executor=None):
    cfg = settings(quick)
    data = nd.sphere_data(n=8, d=4, key=jax.random.key(0))
    net = nd.MLP(in_size=4, width=cfg["widths"][0], depth=1, activation="tanh", key=0)
    problem = nd.GradientFlowProblem(net, data, tspan=(0.0, 1.0))
    ensemble = nd.EnsembleProblem(problem, seeds=range(cfg["seeds"]), widths=cfg["widths"],
                                  axes={"depth": cfg["depths"]}, master_seed=2020,
                                  output=kernel_at_init)
    store = out / ("ntk_fluctuations_quick.store" if quick else "ntk_fluctuations.store")
    ds = nd.solve(ensemble, store=store, executor=executor, progress=not quick,
                  title="NTK fluctuations at initialization over seeds and widths (eq. 11)")
    ds = ds.assign_coords(sample=np.arange(ds.sizes["sample"]),
                          sample_b=np.arange(ds.sizes["sample_b"]))
    failed = int((ds.retcode != 0).sum())
    if failed:
        print(f"  WARNING: {failed} members failed; they are left out (see ds.message)")
    K2 = ds.K2.where(ds.retcode == 0)

    sigma = fluctuation(K2)
    sigma.attrs = {"long_name": "RMS over entries a <= b of the seed standard deviation of "
                                "K2[a, b] at t = 0", "units": "1"}
    fit_t = nd.fit_power_law(sigma, dim="width", interval="t")
    fit_boot = nd.fit_power_law(K2, dim="width", interval="bootstrap", sample_dim="seed",
                                statistic=fluctuation, n_boot=cfg["n_boot"], seed=1)
    spread = K2.std("seed", ddof=1)
    fit_entries = nd.fit_power_law(spread.where(K2["sample"] <= K2["sample_b"]), dim="width")
    table = nd.compare_exponents(fit_t, THEORY, tolerance=TOLERANCE)
    table["boot_low"] = fit_boot["exponent_low"].to_series()
    table["boot_high"] = fit_boot["exponent_high"].to_series()

    result = ds.copy()
    result["sigma"] = sigma
    result["K2_mean"] = K2.mean("seed").assign_attrs(
        long_name="seed mean of K2 at t = 0 (approaches frak K2)", units="1")
    for name in ("exponent", "exponent_low", "exponent_high", "exponent_stderr", "prefactor"):
        result[f"sigma_{name}"] = fit_t[name]
    result["sigma_exponent_boot_low"] = fit_boot["exponent_low"].assign_attrs(
        long_name="lower end of the 95% bootstrap-over-seeds interval of k", units="1")
    result["sigma_exponent_boot_high"] = fit_boot["exponent_high"].assign_attrs(
        long_name="upper end of the 95% bootstrap-over-seeds interval of k", units="1")
    result["entry_exponent"] = fit_entries["exponent"].assign_attrs(
        long_name="fitted exponent of the seed standard deviation of K2[a, b] (a <= b)",
        units="1")
    result.attrs["theory_exponent"] = THEORY
    result.attrs["tolerance"] = TOLERANCE
    result.attrs["fit_interval_method"] = fit_t.attrs["interval_method"]
    nc = nd.write_netcdf(result, out / "ntk_fluctuations.nc")
    png = _plot(sigma, fit_t, fit_entries, out / "ntk_fluctuations.png")

    print(f"  K2 at t = 0: {ds.sizes['seed']} seeds x widths {cfg['widths']} x depths "
          f"{cfg['depths']}, n = 8 points on the sphere in R^4, tanh")
    print(f"  fluctuation sigma(m) ~ m^k, theory k = {THEORY} (eq. 11, r = 2), "
          f"pass if |k - theory| <= {TOLERANCE}"
          f"{' (quick: too few seeds and widths for a verdict)' if quick else ''}:")
    for depth in ds.depth.values:
        row = table.loc[int(depth)]
        entries = fit_entries["exponent"].sel(depth=depth).values
        entries = entries[np.isfinite(entries)]
        print(f"    H = {int(depth)}: k = {row.exponent:+.3f}, 95% t-interval "
              f"[{row.low:+.3f}, {row.high:+.3f}], bootstrap over seeds "
              f"[{row.boot_low:+.3f}, {row.boot_high:+.3f}] -> "
              f"{'PASS' if row['pass'] else 'FAIL'}; per-entry exponents: median "
              f"{np.median(entries):+.3f}, range [{entries.min():+.3f}, {entries.max():+.3f}]")
    print(f"  wrote {nc} and {png}")
    return result


def _plot(sigma, fit, fit_entries, path):
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    m = sigma.width.values.astype(float)
    for depth, color in zip(sigma.depth.values, ("C0", "C1")):
        s = sigma.sel(depth=depth)
        f = fit.sel(depth=depth)
        k, lo, hi = float(f.exponent), float(f.exponent_low), float(f.exponent_high)
        left.loglog(m, s, "o", color=color, label=f"H = {int(depth)}: data")
        left.loglog(m, float(f.prefactor) * m**k, "-", color=color,
                    label=f"H = {int(depth)}: fit k = {k:.3f} [{lo:.3f}, {hi:.3f}]")
        entries = fit_entries["exponent"].sel(depth=depth).values.ravel()
        entries = entries[np.isfinite(entries)]
        jitter = np.random.default_rng(0).uniform(-0.15, 0.15, entries.size)
        right.plot(int(depth) + jitter, entries, ".", color=color, alpha=0.7)
    anchor = float(sigma.isel(width=0).max())
    left.loglog(m, anchor * 1.3 * (m / m[0]) ** THEORY, "k--", lw=1, label=r"$m^{-1/2}$ (eq. 11)")
    left.set(xlabel="width m", ylabel=r"$\sigma(m)$: RMS seed std of $K_2[a,b]$",
             title="NTK fluctuation at initialization")
    left.legend(fontsize=8)
    right.axhline(THEORY, color="k", ls="--", lw=1, label="theory -1/2")
    right.axhspan(THEORY - TOLERANCE, THEORY + TOLERANCE, color="0.9", label=f"tolerance {TOLERANCE}")
    right.set(xticks=list(sigma.depth.values.astype(int)), xlabel="depth H",
              ylabel="fitted exponent", title=r"exponent of each entry's seed std, $a \leq b$")
    right.legend(fontsize=8)
    for axis in (left, right):
        axis.grid(alpha=0.3, which="both")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    nd.run_case(run, __doc__)
