-- Live carrier operations: bookings the carrier lost are re-created and shown to ops, and own-courier
-- parcels are handed over and delivered from the Operations page (docs/connectors.md "CDEK", docs/core.md).

-- 1. Reconciliation. When CDEK answers "not found" for a stored booking (or its uuid now names another
--    shipment), the connector books the shipment again under the same number and keeps what it replaced,
--    how often and why here; a booking that cannot be polled or re-created keeps the error instead of
--    failing every run. The Operations page lists these rows (oms_ops.read_model.carrier_booking_issues).
ALTER TABLE connectors.carrier_bookings
  ADD COLUMN reconcile_count integer NOT NULL DEFAULT 0 CHECK (reconcile_count >= 0),
  ADD COLUMN reconciled_at timestamptz,            -- last time the booking was re-created
  ADD COLUMN reconcile_reason text,                -- what CDEK said (not found / the uuid names another order)
  ADD COLUMN previous_carrier_uuid text,           -- the uuid the carrier no longer knew
  ADD COLUMN previous_tracking_number text,        -- and its tracking number (CDEK number), if it had one
  ADD COLUMN last_error text,                      -- why the last poll or re-creation of this booking failed
  ADD COLUMN last_error_at timestamptz;
COMMENT ON COLUMN connectors.carrier_bookings.reconcile_count IS
  'how many times the booking was re-created because the carrier no longer knew it';
CREATE INDEX carrier_bookings_attention_idx ON connectors.carrier_bookings (shipment_id)
  WHERE reconcile_count > 0 OR last_error IS NOT NULL;

-- 2. Own courier from the dashboards (dashboards/courier_panel.py → services.shipping.hand_over /
--    mark_delivered): the shipment transition writes the state and the stamp columns of the state machine
--    (it locks the rows FOR UPDATE, which needs UPDATE too). Orders, order lines and order events are
--    already writable for the dashboards' role (0006).
GRANT UPDATE (state, updated_at, label_printed_at, handed_over_at, in_transit_at, ready_for_pickup_at,
              delivered_at, picked_up_at, not_delivered_at, returned_at)
  ON oms.shipments TO oms_dashboard;
