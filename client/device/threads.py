"""One thread for one query: a single query's work is too small to split between threads.

A one-query MiniLM forward is about a hundred small operations. On two threads each of them ends at a
barrier where one thread waits for the other, and when the other is descheduled (a busy machine, or
FAISS' or BLAS' own thread pools still spinning after their last call) every wait costs a scheduler time
slice: `Device.search` measured 515 ms p50 at 100k items that way, against ~11 ms on one thread. The
previous settings come back afterwards: the device may run inside a bigger process (the demo, a server).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import faiss
import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with torch and FAISS on one thread each, then restore their thread counts."""
    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        faiss.omp_set_num_threads(faiss_threads)
