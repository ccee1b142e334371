"""Suite-wide safety net: a test that fails half-way must not leave a child process that outlives pytest.

multiprocessing joins its non-daemon children when the interpreter exits, so one forked worker blocked on an
event a failed test never set keeps pytest (and CI) waiting for ever after the summary is printed.
"""

from __future__ import annotations

import multiprocessing


def pytest_sessionfinish(session, exitstatus):  # pytest's hook signature
    left = multiprocessing.active_children()
    for child in left:
        child.kill()
        child.join(5)
    if left:
        print("\nconftest: killed %d child process(es) a test left running: %s"
              % (len(left), ", ".join(str(c.pid) for c in left)))
