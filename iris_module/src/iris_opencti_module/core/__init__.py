"""What both sides share: the converter and everything it needs, with no IRIS, broker or OpenCTI client.

The connectors import this package only (import-linter contract in pyproject.toml), so the module and the
connector's reconcile convert the same IRIS object into the same STIX ids.
"""
