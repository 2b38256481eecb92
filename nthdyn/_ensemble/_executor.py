"""Executors: where the points of an ensemble run.

An executor maps a function over work items and yields `(index, result)` pairs
as items finish, in any order. Results never depend on the executor: every
member's random key derives from the master seed and its own seed
(`jax.random.fold_in`), and the driver puts results back in plan order.

- `InProcess()`: one item after the other in this process (the default).
- `DaskExecutor(address=None, n_workers=2)`: items are submitted to a
  `dask.distributed.Client`, either of a `LocalCluster` that the executor
  starts (and stops) or of a running scheduler at `address`.

Executors hold resources (a cluster), so they are context managers:

    with nd.DaskExecutor(n_workers=4) as executor:
        ds = nd.solve(ensemble, nd.Tsit5(), executor=executor, store="sweep")

An item that fails for a reason outside the computation (a worker died, a
result could not be sent back) is yielded as `(index, LostItem(message))`:
the driver records it as lost, and running the sweep again recomputes it.
"""

from __future__ import annotations

import abc
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .._checks import positive_float, positive_int


class LostItem:
    """An item that an executor could not run (the worker died, ...)."""

    def __init__(self, message: str):
        self.message = message

    def __repr__(self) -> str:
        return f"LostItem({self.message!r})"


class AbstractExecutor(abc.ABC):
    """Runs `function(*shared, item)` for each item; see the module docstring."""

    @abc.abstractmethod
    def map_unordered(
        self, function: Callable[..., Any], shared: Sequence[Any], items: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        """Yield `(index, function(*shared, items[index]))` as each item finishes.
        `shared` arguments are sent once (to each worker), not once per item."""

    def close(self) -> None:
        """Release what the executor started (a no-op for `InProcess`)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def describe(self) -> str:
        return type(self).__name__ + "()"


class InProcess(AbstractExecutor):
    """Run the points one after the other in this process."""

    def map_unordered(self, function, shared, items):
        for index, item in enumerate(items):
            yield index, function(*shared, item)


def _is_client(value: Any) -> bool:
    from dask.distributed import Client  # imported only when a client is given

    return isinstance(value, Client)


class DaskExecutor(AbstractExecutor):
    """Run the points on Dask distributed.

    **Arguments:**

    - `address`: a scheduler address such as `"tcp://10.0.0.5:8786"`; `None`
      starts a `LocalCluster` on this machine (stopped again by `close()`).
    - `n_workers`, `threads_per_worker`, `processes`: the `LocalCluster`'s
      settings (ignored with `address`). One thread per worker suits JAX,
      which parallelises inside each computation.
    - `client`: an existing `dask.distributed.Client` to use (not closed by
      `close()`); excludes `address`.
    - `timeout`: seconds to wait for the scheduler at `address`.

    Results are sent back to this process, which alone writes the sweep's
    store: the workers need no shared file system.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        n_workers: int = 2,
        threads_per_worker: int = 1,
        processes: bool = True,
        client: Any = None,
        timeout: float = 20.0,
    ):
        if address is not None and client is not None:
            raise ValueError(
                f"DaskExecutor(address={address!r}, client=...): give one of them, "
                "not both."
            )
        if client is not None and not _is_client(client):
            raise TypeError(
                f"client={client!r}: pass a dask.distributed.Client, or leave client=None "
                "(with address=None a LocalCluster is started)."
            )
        if address is not None and (not isinstance(address, str) or not address):
            raise TypeError(
                f"address={address!r}: pass a scheduler address string such as "
                "'tcp://127.0.0.1:8786', or None for a LocalCluster."
            )
        if address is not None and not re.fullmatch(r"[a-z]+://\S+|[^\s:/]+:\d+", address):
            raise ValueError(
                f"address={address!r} is not a Dask scheduler address: pass one such as "
                "'tcp://127.0.0.1:8786' (what `dask scheduler` prints), or None for a "
                "LocalCluster on this machine.")
        self.address = address
        self.n_workers = positive_int(n_workers, "n_workers")
        self.threads_per_worker = positive_int(threads_per_worker, "threads_per_worker")
        self.processes = bool(processes)
        self.timeout = positive_float(timeout, "timeout")
        self._client = client
        self._owns_client = client is None
        self._cluster = None

    def describe(self) -> str:
        if self.address is not None:
            return f"DaskExecutor(address={self.address!r})"
        if not self._owns_client:
            return "DaskExecutor(client=...)"
        return (f"DaskExecutor(n_workers={self.n_workers}, threads_per_worker="
                f"{self.threads_per_worker}, processes={self.processes})")

    @property
    def client(self):
        """The `dask.distributed.Client`, started on first use."""
        if self._client is None:
            from dask.distributed import Client, LocalCluster

            if self.address is None:
                self._cluster = LocalCluster(
                    n_workers=self.n_workers,
                    threads_per_worker=self.threads_per_worker,
                    processes=self.processes,
                    # no dashboard, and the scheduler's HTTP server on a free port: with
                    # dashboard_address=None it still takes 8787 and, where that is in use
                    # (another cluster, another job), warns and moves
                    dashboard_address=":0", scheduler_kwargs={"dashboard": False},
                    silence_logs=logging.ERROR,
                )
                self._client = Client(self._cluster)
            else:
                try:
                    self._client = Client(self.address, timeout=f"{self.timeout}s")
                except OSError as error:
                    raise ConnectionError(
                        f"DaskExecutor(address={self.address!r}): no Dask scheduler "
                        f"answered ({error}). Start one with `dask scheduler` and workers "
                        "with `dask worker ADDRESS`, or leave address=None for a "
                        "LocalCluster on this machine."
                    ) from None
        return self._client

    def map_unordered(self, function, shared, items):
        from dask.distributed import as_completed

        client = self.client
        try:
            shared_futures = [client.scatter(value, broadcast=True, hash=False) for value in shared]
        except Exception as error:
            raise TypeError(
                f"DaskExecutor could not send the ensemble to the workers ({error!r}). "
                "Functions given to EnsembleProblem (output=...) must be picklable: "
                "define them at module level."
            ) from error
        futures = {
            client.submit(function, *shared_futures, item, pure=False): index
            for index, item in enumerate(items)
        }
        try:
            for future in as_completed(futures):
                index = futures[future]
                try:
                    result = future.result()
                except Exception as error:  # worker lost, result not transferable, ...
                    result = LostItem(f"{type(error).__name__}: {error}")
                future.release()
                yield index, result
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
