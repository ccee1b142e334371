"""The import connector: IRIS's queue into steps, planned against the ledger, sent to OpenCTI's workers."""
