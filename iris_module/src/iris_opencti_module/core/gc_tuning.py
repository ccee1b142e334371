"""Python's cyclic garbage collector set for processes that hold whole case parts in memory.

A full collection walks every container object alive, with the interpreter stopped. A 4 MiB case part decodes
into about a million of them, and CPython runs a full collection each time enough new objects survived
(``gc.get_threshold()[2]``, 10 younger collections, and a quarter more than at the last one): measured on a
20,000-IOC case, the import connector spent 1.7 s in 15 full collections and ``iris-opencti push`` of 50,000
IOCs 0.8 s in 13, for garbage that is almost all freed by reference counting anyway (decoded JSON has no
cycles).

So our own processes (the connectors, the command line, the test doubles; never IRIS's, whose collector the
hooks leave alone) freeze what start-up left alive (imported modules: it is never scanned again) and consider
a full collection ten times less often. Cyclic garbage is still collected, later.
"""

from __future__ import annotations

import gc

#: younger collections before a full one is considered (CPython's default is 10)
FULL_AFTER = 100

_tuned = False


def tune_for_bulk() -> None:
    """Freeze what is alive now and make full collections rarer (see the module docstring); once per process."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    gc.collect()
    gc.freeze()
    young, middle, full = gc.get_threshold()
    gc.set_threshold(young, middle, max(full, FULL_AFTER))
