"""Accounting documents to 1C: the OMS as "the site" of 1C's standard CommerceML 2 exchange (docs/onec.md).

:mod:`oms_ops.onec.commerceml` writes and reads the documents (safely: no DOCTYPE, size limits);
:mod:`oms_ops.onec.exchange` is the protocol's state — sessions, export batches confirmed by 1C, uploaded
files and their import.
"""
