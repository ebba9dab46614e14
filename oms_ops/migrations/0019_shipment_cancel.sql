-- Cancelling a shipment before hand-over (oms_ops/shipment_cancel.py, docs/core.md "Cancelling a shipment").
-- The parcel never left: the shipment moves to 'cancelled' (state machine, from created / label_printed only),
-- its units are put back at a location and reserved again for their lines, or — with no location given —
-- stock is left as it is and the lines wait for the allocator again. A carrier booking is deleted through
-- the outbox effect 'carrier.cancel_shipment'.

-- 1. When the shipment was cancelled (stamped by the state machine, first time only) and where its units
--    went back (NULL: stock untouched).
ALTER TABLE oms.shipments
  ADD COLUMN cancelled_at timestamptz,
  ADD COLUMN cancel_location_code text REFERENCES oms.locations;
COMMENT ON COLUMN oms.shipments.cancel_location_code IS
  'where the units of a cancelled shipment were put back and re-reserved (NULL: stock left untouched)';

-- 2. The ledger entry of units coming back from a cancelled shipment: on_hand +qty (and reserved +qty when they
--    are reserved again for their line) — the mirror of the ''ship'' entry that took them out.
ALTER TABLE oms.inventory_ledger DROP CONSTRAINT inventory_ledger_kind_check;
ALTER TABLE oms.inventory_ledger ADD CONSTRAINT inventory_ledger_kind_check
  CHECK (kind IN ('receipt','adjustment','reservation','release','pick','ship','ship_cancel',
                  'return_restock','write_off'));

-- 3. The carrier's side: when the carrier confirmed the booking's deletion. A refusal stays in last_error
--    (Operations → carrier booking issues) and in raw.quarantine as carrier:<code>.
ALTER TABLE connectors.carrier_bookings ADD COLUMN cancelled_at timestamptz;
