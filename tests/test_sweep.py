"""Sweeps that lose nothing: resumed after SIGKILL they equal an uninterrupted run,
finished points are never recomputed, and a changed configuration is refused."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
import xarray as xr

import nthdyn as nd
from nthdyn._ensemble._executor import AbstractExecutor, LostItem
from nthdyn._ensemble._store import SweepStore, read_log

SCRIPT = textwrap.dedent('''
    """A sweep of 4 widths x 4 seeds of K2 at initialisation, stored point by point."""
    import sys

    import jax
    import nthdyn as nd


    def kernel(problem):
        return {"K2": (("sample", "sample_b"), nd.ntk_structured(problem.network, problem.data.X))}


    data = nd.sphere_data(n=6, d=3, key=jax.random.key(1))
    problem = nd.GradientFlowProblem(nd.MLP(in_size=3, width=8, key=0), data, tspan=(0.0, 1.0))
    ensemble = nd.EnsembleProblem(problem, seeds=range(4), widths=[4, 6, 8, 10], output=kernel)
    nd.solve(ensemble, store=sys.argv[1])
''')


def _readout(problem):
    """A cheap per-member output (no compilation of a batched function)."""
    return {"a0": float(problem.network.readout[0])}


@pytest.fixture
def cheap(small_data):
    net = nd.MLP(in_size=3, width=4, depth=1, key=0)
    problem = nd.GradientFlowProblem(net, small_data, tspan=(0.0, 1.0))
    return nd.EnsembleProblem(problem, seeds=range(3), widths=[4, 5, 6], output=_readout,
                              vmap=False)


def _points(store):
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_ino)
            for p in sorted((store / "points").glob("p*.nc"))}


def _computed(store):
    """Indices of the points each run computed, from the store's log."""
    runs = []
    for event in read_log(store):
        if event["event"] == "start":
            runs.append([])
        elif event["event"] == "point":
            runs[-1].append(event["index"])
    return runs


def test_sigkill_and_resume_equals_uninterrupted_run(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT)
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    # The three runs share JAX's persistent compilation cache: the same compiled
    # programs, compiled once (the runs are then dominated by Python start-up).
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    log = tmp_path / "killed.log"
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, str(script), str(killed)], env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not (killed / "points").exists() or not _points(killed):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no point finished in time"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    survivors = _points(killed)
    assert 1 <= len(survivors) <= 4, survivors  # killed once a point was stored

    for store in (killed, reference):  # resume; and an uninterrupted run
        done = subprocess.run([sys.executable, str(script), str(store)], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr

    # Finished points were not recomputed: same files (mtime, inode), and the log shows
    # that the second run computed exactly the missing points, each once. A point's log
    # line follows its (atomic) file, so the kill may fall between the two: the first
    # run logged a subset of the points that survived, wherever the kill fell.
    after = _points(killed)
    assert len(after) == 4
    for name, stamp in survivors.items():
        assert after[name] == stamp
    first, second = _computed(killed)
    survived = {int(name[1:7]) for name in survivors}
    assert set(first) <= survived and len(set(first)) == len(first)
    assert sorted(second) == sorted(set(range(4)) - survived)  # each missing point, once
    assert not list((killed / "points").glob(".*.part"))  # no debris left

    a = xr.load_dataset(killed / "ensemble.nc")
    b = xr.load_dataset(reference / "ensemble.nc")
    xr.testing.assert_identical(a.drop_attrs(deep=False), b.drop_attrs(deep=False))
    assert a.attrs["config_sha256"] == b.attrs["config_sha256"]
    for name in after:  # point for point
        xr.testing.assert_identical(xr.load_dataset(killed / "points" / name),
                                    xr.load_dataset(reference / "points" / name))
    assert (a.retcode == 0).all() and a.K2.dims == ("seed", "width", "sample", "sample_b")


def test_rerun_skips_finished_points(cheap, tmp_path):
    store = tmp_path / "store"
    first = nd.solve(cheap, store=store)
    stamps = _points(store)
    (store / "points" / "p000001.nc").unlink()
    second = nd.solve(cheap, store=store)
    assert _computed(store) == [[0, 1, 2], [1]]
    after = _points(store)
    assert after["p000000.nc"] == stamps["p000000.nc"]
    assert after["p000002.nc"] == stamps["p000002.nc"]
    xr.testing.assert_identical(first.drop_attrs(deep=False), second.drop_attrs(deep=False))
    third = nd.solve(cheap, store=store)  # nothing left to do
    assert _computed(store)[-1] == []
    xr.testing.assert_identical(third.drop_attrs(deep=False), first.drop_attrs(deep=False))
    on_disk = nd.read_netcdf(store / "ensemble.nc")
    xr.testing.assert_identical(on_disk.drop_attrs(deep=False), first.drop_attrs(deep=False))
    assert json.loads((store / "sweep.json").read_text())["config_sha256"] == \
        on_disk.attrs["config_sha256"]


def test_changed_configuration_is_refused(cheap, tmp_path):
    store = tmp_path / "store"
    nd.solve(cheap, store=store)
    problem = cheap.problem
    changed = [
        (nd.EnsembleProblem(problem, seeds=range(3), widths=[4, 5, 7], output=_readout,
                            vmap=False), "axes.width"),
        (nd.EnsembleProblem(problem, seeds=range(3), widths=[4, 5, 6], output=_readout,
                            vmap=False, master_seed=1), "master_seed"),
        (nd.EnsembleProblem(nd.remake(problem, tspan=(0.0, 2.0)), seeds=range(3),
                            widths=[4, 5, 6], output=_readout, vmap=False), "problem.tspan"),
        (nd.EnsembleProblem(problem, seeds=range(3), widths=[4, 5, 6],
                            output=lambda p: {"a0": 0.0}, vmap=False), "output"),
    ]
    for ensemble, what in changed:
        with pytest.raises(nd.SweepConfigError, match="different configuration") as error:
            nd.solve(ensemble, store=store)
        assert what in str(error.value) and "use another store path" in str(error.value)
    data = nd.sphere_data(n=6, d=3, key=jax.random.key(99))  # other data, same shapes
    with pytest.raises(nd.SweepConfigError, match="data_sha256"):
        nd.solve(nd.EnsembleProblem(nd.remake(problem, data=data), seeds=range(3),
                                    widths=[4, 5, 6], output=_readout, vmap=False),
                 store=store)
    assert len(_computed(store)) == 1  # nothing was run against the store


def test_store_must_be_a_sweep_store_and_not_in_use(cheap, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(nd.SweepConfigError, match="is not an nthdyn sweep store"):
        nd.solve(cheap, store=tmp_path)
    store = tmp_path / "store"
    holder = SweepStore(store, {"a": 1}, [])
    try:
        with pytest.raises(nd.SweepConfigError, match="in use by another running sweep"):
            SweepStore(store, {"a": 1}, [])
    finally:
        holder.close()


class _LosesPointOne(AbstractExecutor):
    """Runs in process but 'loses' point 1, as a dead Dask worker would."""

    def map_unordered(self, function, shared, items):
        for index, item in enumerate(items):
            yield index, LostItem("KilledWorker: gone") if item == 1 else function(*shared, item)


def test_lost_points_are_marked_and_recomputed_later(cheap, tmp_path):
    store = tmp_path / "store"
    with pytest.warns(RuntimeWarning, match="lost by the executor"):
        ds = nd.solve(cheap, store=store, executor=_LosesPointOne())
    assert (ds.retcode.sel(width=5) == 5).all() and (ds.retcode.sel(width=4) == 0).all()
    assert "KilledWorker" in str(ds.message.sel(width=5, seed=0).values)
    assert np.isnan(ds.a0.sel(width=5)).all()
    assert not (store / "points" / "p000001.nc").exists()  # not stored: recomputed next time
    again = nd.solve(cheap, store=store)
    assert (again.retcode == 0).all() and _computed(store)[-1] == [1]


def test_open_sweep_reads_finished_points(cheap, tmp_path):
    store = tmp_path / "store"
    nd.solve(cheap, store=store)
    (store / "points" / "p000002.nc").unlink()
    partial = nd.open_sweep(store)
    assert partial.width.values.tolist() == [4, 5]


def test_execution_settings_are_not_configuration(cheap, small_data):
    from nthdyn._ensemble import computation_for

    flows = nd.EnsembleProblem(cheap.problem, seeds=range(2))
    quiet = computation_for(flows, nd.Tsit5(), {"rtol": 1e-8})
    chatty = computation_for(flows, nd.Tsit5(), {"rtol": 1e-8, "progress": True})
    assert quiet.config() == chatty.config()
    assert computation_for(flows, nd.Tsit5(), {"rtol": 1e-9}).config() != quiet.config()
