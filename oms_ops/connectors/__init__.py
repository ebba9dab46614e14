"""Connectors: httpx clients for the channels, the carrier and the WMS, and the glue that turns what they say
into OMS operations (raw payloads → normalised orders, stock snapshots, carrier bookings and tracking, ATS
pushes, the outbox drain). No Dagster in here: ``pipelines/defs/channels`` and ``pipelines/defs/operations``
call these functions. See ``docs/connectors.md``.
"""
