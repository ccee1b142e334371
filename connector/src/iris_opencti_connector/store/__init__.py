"""What the connectors keep: the ledger (what each IRIS object produced) and the audit archive."""
