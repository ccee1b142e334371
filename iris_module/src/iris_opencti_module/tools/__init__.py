"""``iris-opencti``: export, push and doctor, for operators (no IRIS process needed)."""
