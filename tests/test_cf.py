"""Every kind of file nthdyn writes passes the CF checker (cfchecks, CF-1.8) with 0
errors and 0 warnings. The checker downloads the CF standard-name, area-type and
region tables; nthdyn uses none of their entries, so minimal local tables
(tests/cf_tables) stand in for them and the test needs no network. Skipped, with the
reason, where the checker cannot be imported (it needs the udunits2 C library,
which .ci/run installs)."""

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import nthdyn as nd

TABLES = Path(__file__).parent / "cf_tables"

try:
    import cfchecker.cfchecks  # noqa: F401
    CHECKER = None
except Exception as error:  # ImportError, or OSError from a missing libudunits2
    CHECKER = f"the CF checker cannot be imported here ({type(error).__name__}: {error})"


def _files(folder):
    data = nd.sphere_data(n=4, d=3, key=jax.random.key(0))
    net = nd.MLP(3, 6, 1, key=0)
    times = np.linspace(0.0, 1.0, 3)
    flow = nd.solve(nd.GradientFlowProblem(net, data, (0.0, 1.0), test=data.X[:2]),
                    saveat=times, save_ntk=True)
    nth = nd.solve(nd.NTHProblem(net, data, 3, (0.0, 1.0), test=data.X[:2]), saveat=times)
    flow_ntk = nd.solve(nd.GradientFlowProblem(net, data, (0.0, 1.0)), saveat=times,
                        save_ntk=True)
    problem = nd.GradientFlowProblem(net, data, (0.0, 1.0))
    yield "flow", nd.to_dataset(flow)
    yield "hierarchy", nd.to_dataset(nth)
    yield "descent", nd.to_dataset(nd.solve(nd.GradientDescentProblem(net, data, 2, 0.1)))
    yield "regression", nd.to_dataset(nd.solve(nd.KernelRegressionProblem(
        nd.LimitingNTK(net), data, (0.0, 1.0)), saveat=times, save_ntk=True))
    yield "compare", nd.compare(flow_ntk, nd.solve(nd.NTHProblem(net, data, 2, (0.0, 1.0)),
                                                   saveat=times))
    yield "ensemble", nd.solve(nd.EnsembleProblem(problem, seeds=range(2), widths=[4, 6]),
                               saveat=times, max_steps=3, keep_failures=True)  # with messages
    store = folder / "store"
    yield "ensemble_output", nd.solve(
        nd.EnsembleProblem(problem, seeds=range(2), output=_kernel), store=store)
    yield "sweep_point", nd.read_netcdf(store / "points" / "p000000.nc")
    yield "estimate", nd.estimate_kernel_limit(net, data.X, widths=[4, 6], seeds=range(2))
    yield "discrete_hierarchy", nd.to_dataset(nd.solve(nd.DiscreteNTHProblem(net, data, 3, 0.1, 2)))
    yield "descent_lambda_max", nd.to_dataset(nd.solve(nd.GradientDescentProblem(net, data, 2, 0.1),
                                                       save_lambda_max=True))
    two = nd.TwoLayer(3, 4, alpha=1.0, activation="tanh", key=0)
    yield "two_layer_regime", nd.to_dataset(nd.solve(nd.GradientFlowProblem(
        two, data, (0.0, 1.0), weight_decay=1e-3, time_scale="mean_field"), saveat=times,
        save_regime=True))  # the neuron and layer dimensions
    yield "langevin", nd.to_dataset(nd.solve(nd.GradientFlowProblem(
        two, data, (0.0, 1.0), temperature=0.01, noise_key=1), dt0=0.25, saveat=times))


def _kernel(problem):
    return {"K2": (("sample", "sample_b"), nd.ntk_structured(problem.network, problem.data.X))}


@pytest.mark.skipif(CHECKER is not None, reason=CHECKER or "")
def test_every_kind_of_file_passes_cfchecks(tmp_path):
    paths = [nd.write_netcdf(ds, tmp_path / f"{kind}.nc") for kind, ds in _files(tmp_path)]
    assert len(paths) == 13
    # one run of the checker over all the files (one interpreter start): a report per file
    done = subprocess.run(
        [sys.executable, "-m", "cfchecker.cfchecks", "-v", "1.8",
         "-s", str(TABLES / "standard-names.xml"), "-a", str(TABLES / "area-types.xml"),
         "-r", str(TABLES / "regions.xml"), *map(str, paths)],
        capture_output=True, text=True, timeout=600)
    report = done.stdout + done.stderr
    reports = report.split("CHECKING NetCDF FILE: ")[1:]
    assert [part.split()[0] for part in reports] == [str(path) for path in paths], report[-3000:]
    for path, part in zip(paths, reports):
        assert "ERRORS detected: 0" in part and "WARNINGS given: 0" in part, \
            f"{path.name}:\n{part[-3000:]}"
    assert done.returncode == 0, report[-3000:]


def test_references_and_the_data_of_output_ensembles(tmp_path):
    (kind, flow), *_ = _files(tmp_path)
    assert "Huang & Yau" in flow.attrs["references"] and flow.attrs["Conventions"] == "CF-1.8"
    data = nd.sphere_data(n=4, d=3, key=jax.random.key(0))
    problem = nd.GradientFlowProblem(nd.MLP(3, 6, 1, key=0), data, (0.0, 1.0))
    ds = nd.solve(nd.EnsembleProblem(problem, seeds=range(2), output=_kernel))
    np.testing.assert_array_equal(ds.X, data.X)  # kept, not only their hash
    np.testing.assert_array_equal(ds.y, data.y)
