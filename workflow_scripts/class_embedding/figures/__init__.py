"""Figure and table targets, one function per target named like it, and the shared plotting
helpers (``plotting``)."""
