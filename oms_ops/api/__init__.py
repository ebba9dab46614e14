"""The OMS's HTTP API: the one way the dashboards change anything.

The dashboards read with a login that may only SELECT (migration 0016); every change they offer — releasing
a hold, cancelling, replaying the quarantine, returns, the courier's hand-over, channel mappings… — is an
*action* of :mod:`oms_ops.api.actions`, run by :mod:`oms_ops.api.app` under the OMS's own login after the
caller's role and arguments were checked. See docs/api.md.
"""
