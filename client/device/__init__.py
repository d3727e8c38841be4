"""The device: a party of its own, which ships alone (a phone, a shop backend).

It reads one signed, published artifact (shared/artifact.py) and runs everything else locally: it
imports only `shared/` and itself, never the partner's training client (client/app.py, train.py,
mods.py, ...), the server or the simulations; tests/test_device_imports.py holds it to that.

- runtime.py: `Device`, loading a trusted artifact and answering recommend / search / similar /
  complements through one ranking path
- session.py: `Session`, events in, fresh recommendations out
- trust.py: the pinned publisher key and the rollback guard
- history.py: reading a device's history file
- tower.py, query.py, intent.py: the user tower in NumPy, the query encoder, explainable query rows
- query_encoder.py: a bf16 / int8 copy of the query encoder, used only where it agrees with fp32
- ranking.py, filters.py, diversity.py, items.py, threads.py: the index search (exact re-ranking after a
  compressed index), filters, MMR and coverage, result rows, one thread per query
- serve.py, page/: `fedrec serve`, a local HTTP API (Starlette + uvicorn, 127.0.0.1) and one page
- index_add.py: `fedrec index add`, new items from their text into the next signed version
"""

from client.device.diversity import coverage, intra_list_similarity
from client.device.filters import Filters
from client.device.history import read_history
from client.device.intent import Reason
from client.device.items import Recommendation
from client.device.runtime import MAX_K, Device, check_k, clean_query
from client.device.session import EVENT_STRENGTH, Session
from client.device.trust import STATE_FILE, accept_round, default_state_dir, publisher_key_file
from shared.schema import MAX_QUERY_CHARS

__all__ = [
    "EVENT_STRENGTH",
    "MAX_K",
    "MAX_QUERY_CHARS",
    "STATE_FILE",
    "Device",
    "Filters",
    "Reason",
    "Recommendation",
    "Session",
    "accept_round",
    "check_k",
    "clean_query",
    "coverage",
    "default_state_dir",
    "intra_list_similarity",
    "publisher_key_file",
    "read_history",
]
