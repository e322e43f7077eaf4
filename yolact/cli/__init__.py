"""The command lines: one module per CLI (the top-level scripts are thin shims), the
shared flags defined once."""
