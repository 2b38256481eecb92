"""Dask distributed: a real LocalCluster (2 worker processes) gives the in-process
results; the case command line reaches it with --scheduler/--workers."""

import argparse
import runpy
import textwrap

import numpy as np
import pytest
import xarray as xr

import nthdyn as nd
from nthdyn._case import _executor

pytest.importorskip("dask.distributed")


def kernel(problem):
    return {"K2": (("sample", "sample_b"), nd.ntk_structured(problem.network, problem.data.X))}


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import LocalCluster

    # the scheduler's HTTP server on a free port, not 8787 (see DaskExecutor.client)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", scheduler_kwargs={"dashboard": False}) as cluster:
        yield cluster


@pytest.fixture
def ensemble(small_data):
    net = nd.MLP(in_size=3, width=4, depth=1, key=0)
    problem = nd.GradientFlowProblem(net, small_data, tspan=(0.0, 1.0))
    return nd.EnsembleProblem(problem, seeds=range(3), widths=[4, 6], output=kernel)


def test_local_cluster_equals_in_process(ensemble, cluster, tmp_path):
    reference = nd.solve(ensemble)
    with nd.DaskExecutor(cluster.scheduler_address) as executor:
        assert executor.describe().startswith("DaskExecutor(address=")
        distributed = nd.solve(ensemble, executor=executor)
        stored = nd.solve(ensemble, executor=executor, store=tmp_path / "store")
        workers = executor.client.run(lambda: __import__("os").getpid())
    assert len(set(workers.values())) == 2  # two worker processes did the work
    for ds in (distributed, stored):
        assert ds.K2.dims == reference.K2.dims and (ds.retcode == 0).all()
        np.testing.assert_allclose(ds.K2, reference.K2, rtol=0, atol=1e-12)
    xr.testing.assert_identical(nd.read_netcdf(tmp_path / "store" / "ensemble.nc").K2,
                                stored.K2)


CASE = textwrap.dedent('''
    """A tiny case whose ensemble runs where --workers/--scheduler say."""
    import jax
    import nthdyn as nd


    def kernel(problem):
        return {"K2": (("sample", "sample_b"), nd.ntk_structured(problem.network, problem.data.X))}


    def run(out, quick, *, executor):
        data = nd.sphere_data(n=4, d=3, key=jax.random.key(0))
        problem = nd.GradientFlowProblem(nd.MLP(in_size=3, width=4, key=0), data, (0.0, 1.0))
        ensemble = nd.EnsembleProblem(problem, seeds=range(2), widths=[4, 5], output=kernel)
        ds = nd.solve(ensemble, executor=executor, store=out / "store")
        nd.write_netcdf(ds, out / "tiny.nc")
        return type(executor).__name__


    if __name__ == "__main__":
        nd.run_case(run, __doc__)
''')


def test_case_command_line_reaches_the_cluster(cluster, tmp_path, capsys):
    path = tmp_path / "tiny_case.py"
    path.write_text(CASE)
    namespace = runpy.run_path(str(path), run_name="__nthdyn_case__")
    used = nd.run_case(namespace["run"], namespace["__doc__"],
                       ["--out", str(tmp_path / "out"), "--scheduler", cluster.scheduler_address],
                       name="tiny_case")
    assert used == "DaskExecutor"
    assert "ensembles run on DaskExecutor(address=" in capsys.readouterr().out
    ds = nd.read_netcdf(tmp_path / "out" / "tiny.nc")
    assert (ds.retcode == 0).all() and ds.K2.dims == ("seed", "width", "sample", "sample_b")
    in_process = nd.run_case(namespace["run"], namespace["__doc__"],
                             ["--out", str(tmp_path / "out2")], name="tiny_case")
    assert in_process == "InProcess"
    np.testing.assert_allclose(nd.read_netcdf(tmp_path / "out2" / "tiny.nc").K2, ds.K2,
                               rtol=0, atol=1e-12)


def test_command_line_options():
    def args(workers=None, scheduler=None):
        return argparse.Namespace(workers=workers, scheduler=scheduler)

    def distributed_case(out, quick, *, executor):
        pass

    def plain_case(out, quick):
        pass

    executor = _executor(args(workers=3), distributed_case, "c")
    assert isinstance(executor, nd.DaskExecutor) and executor.n_workers == 3
    assert executor.address is None  # a LocalCluster, started on first use
    executor = _executor(args(scheduler="tcp://10.0.0.5:8786"), distributed_case, "c")
    assert executor.address == "tcp://10.0.0.5:8786"
    assert isinstance(_executor(args(), distributed_case, "c"), nd.InProcess)
    assert _executor(args(), plain_case, "c") is None  # quickstart-style cases: unchanged
    with pytest.raises(SystemExit, match="takes no executor.*drop --workers"):
        _executor(args(workers=2), plain_case, "c")
    with pytest.raises(SystemExit, match="not both"):
        _executor(args(workers=2, scheduler="tcp://x:1"), distributed_case, "c")
    with pytest.raises(SystemExit, match="--workers 0"):
        _executor(args(workers=0), distributed_case, "c")


def test_executor_errors():
    with pytest.raises(ValueError, match="give one of them"):
        nd.DaskExecutor("tcp://127.0.0.1:1", client=object())
    with pytest.raises(ValueError, match="n_workers=0"):
        nd.DaskExecutor(n_workers=0)
    with pytest.raises(ConnectionError, match="no Dask scheduler answered"):
        nd.DaskExecutor("tcp://127.0.0.1:9", timeout=1).client  # nothing listens on port 9


def test_a_local_cluster_starts_while_port_8787_is_taken():
    """The scheduler's HTTP server takes a free port: with port 8787 in use (another
    cluster, another job on the machine) the cluster starts without a warning, which the
    suite turns into an error."""
    import socket

    holder = socket.socket()
    try:
        holder.bind(("0.0.0.0", 8787))
        holder.listen()
    except OSError:
        pass  # already in use by someone else: the situation under test
    try:
        with nd.DaskExecutor(n_workers=1, threads_per_worker=1, processes=False) as executor:
            assert executor.client.submit(lambda x: x + 1, 1).result() == 2
    finally:
        holder.close()
