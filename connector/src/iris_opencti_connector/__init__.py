"""OpenCTI connectors for DFIR-IRIS: ``iris-opencti-import`` (IRIS → OpenCTI) and ``iris-opencti-enrich``
(OpenCTI verdicts → IRIS IOC tags)."""

__version__ = "0.1.0"
