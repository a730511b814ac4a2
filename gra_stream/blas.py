"""One BLAS thread for the vector products that feed a decision, in every process.

OpenBLAS sums a float32 product in another order on another number of threads, so the same similarity
came out a few bits apart in the runner (every core, under the local executor) and in a worker or under
the processes executor's runner (one): a performance knob changed the `diversity` table. The limit is
the process's, and passes overlap in threads: it is counted, and the last one out restores the original.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

from threadpoolctl import threadpool_limits

_lock = threading.Lock()
_users = 0
_limit = None


@contextmanager
def one_blas_thread():
    global _users, _limit
    with _lock:
        if not _users:
            _limit = threadpool_limits(limits=1, user_api="blas")
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if not _users:
                _limit.restore_original_limits()
