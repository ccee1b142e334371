"""Backfill progress: one line rewritten in place on a terminal, nothing in logs."""

import io

from iris_opencti_module.core.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_counts_cases_and_ioc_rate():
    stream, now = Terminal(), [100.0]
    progress = Progress(4, stream, clock=lambda: now[0])
    now[0] = 102.0
    progress.step(1000)
    progress.step(500)
    progress.finish()
    assert stream.getvalue() == ("\r\x1b[Kcases 1/4, 1,000 IOCs, 500 IOCs/s"
                                 "\r\x1b[Kcases 2/4, 1,500 IOCs, 750 IOCs/s\n")


def test_progress_stays_quiet_when_not_a_terminal():
    stream = io.StringIO()
    progress = Progress(2, stream)
    progress.step(10)
    progress.finish()
    assert stream.getvalue() == "" and progress.done == 1 and progress.iocs == 10
