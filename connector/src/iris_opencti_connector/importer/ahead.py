"""A step planned ahead of time: the import connector's pipeline between its CPU and OpenCTI's workers.

A step is planned (ledger reads, the plan of each message), merged and cut into waves of bundles before the
first bundle leaves, and OpenCTI's workers then ingest it while the connector waits. Done one after the
other, the connector's work and the workers' alternate, each idle half the time: a 50,000-IOC case is 25
parts, each about as long to plan as to ingest. So while a step is being sent, the next one is planned on a
thread of its own, against the ledger as it will be once the current step is in (a ``LedgerOverlay`` holding
the current step's plans), and kept until the current step is written to the ledger.

It is then used only if planning it again would give the same result. A plan is a function of its messages
and of what the ledger holds for their cases, so the question is whether anyone else wrote those cases
meanwhile (a reconcile, another replica): the ledger counts the writes of every case
(``Ledger.case_versions``). The counts read before planning ahead must be those the current step's commit
found before its own writes, and the counts when the step comes must be those that commit left; any other
count means another writer, and the step is planned again, as it always was.

Only steps of upserts alone are planned ahead: a removal is decided by asking OpenCTI who owns an object,
which must wait until OpenCTI holds the step before it (``ImportConnector._form_step``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set


class NotAhead(Exception):
    """Planning ahead met what it must not do before the current step is in OpenCTI (an ownership query)."""


@dataclass
class Prepared:
    """A step planned ahead: the messages it takes (indices into the group), their plans, the merged upserts
    and their waves (``sending.upsert_waves``), and the write counts of its cases read before planning."""

    taken: List[int]
    plans: List[Any]
    upserts: List[Dict[str, Any]]
    waves: Any
    seen: Dict[str, int]

    def cases(self) -> Set[str]:
        return {c.case_id for p in self.plans for c in p.cases}


@dataclass
class Committed:
    """The write counts of a step's cases as its ledger commit found them, before and after its writes."""

    before: Dict[str, int] = field(default_factory=dict)
    after: Dict[str, int] = field(default_factory=dict)


def still_valid(prepared: Prepared, committed: Optional[Committed], now: Dict[str, int]) -> bool:
    """True when no one but the step before wrote ``prepared``'s cases since it was planned (see the module
    docstring); ``now`` holds the counts read under the step's case locks."""
    if committed is None:
        return False
    for case in prepared.cases():
        if case not in prepared.seen or case not in now:
            return False
        if case in committed.after:
            if prepared.seen[case] != committed.before.get(case) or now[case] != committed.after[case]:
                return False
        elif now[case] != prepared.seen[case]:
            return False
    return True
