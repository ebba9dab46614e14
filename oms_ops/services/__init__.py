"""Use cases: one function per operation, one transaction per chunk, set-based.

Entry points (Dagster assets, dashboard actions, the CLI, the worker and the coming public API) call only
these; they in turn call the domain (``oms_ops.*``) and the channel records (``oms_ops.channels``).
"""
