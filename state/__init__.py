"""Memory of the service: vector index, hash stores, records, replication, snapshots.

Never imports ``stream``, ``workers`` or torch.
"""

import os

# FAISS runs on OpenMP. Its default (active) wait policy makes idle team threads spin, which on a
# busy or shared machine turns a millisecond training step or search into tens of milliseconds.
# Passive waiting costs nothing measurable here. Read when libgomp loads, so it only takes effect
# if nothing loaded it earlier: the service's environment should set it too.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
