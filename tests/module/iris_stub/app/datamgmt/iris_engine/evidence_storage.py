class EvidenceStorage:
    """IRIS's evidence storage; processor modules do not use it."""
