"""The enrichment connector: OpenCTI's verdict on an observable, written back onto the IRIS IOCs."""
