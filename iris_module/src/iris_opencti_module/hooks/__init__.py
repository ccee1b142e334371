"""The IRIS side of a hook: the handler's policy, the adapter over IRIS's models, the module's own state."""
