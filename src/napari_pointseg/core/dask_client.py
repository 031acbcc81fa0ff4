"""One way to reach a Dask cluster, for every command that takes ``--scheduler``."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from .errors import InputError


@contextmanager
def dask_client(scheduler) -> Iterator:
    """A ``distributed.Client`` for ``scheduler``: an address (connected here, closed on exit)
    or a Client (used as it is, left open). InputError, before any work, when
    dask.distributed is not installed or the scheduler cannot be reached within 20 s."""
    try:
        from distributed import Client
    except ImportError:
        raise InputError("--scheduler needs dask.distributed: pip install 'dask[distributed]'") from None
    own = not isinstance(scheduler, Client)
    try:
        client = Client(scheduler, timeout="20s") if own else scheduler
    except (OSError, TimeoutError, ValueError) as e:
        raise InputError(f"cannot connect to the Dask scheduler {scheduler}: {e}") from None
    try:
        yield client
    finally:
        if own:
            client.close()
