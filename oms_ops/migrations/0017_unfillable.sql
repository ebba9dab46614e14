-- Routing cascade and unfillable orders (docs/allocation.md, "Cascade" and "Unfillable orders").
--
-- A decision records the rules the cascade tried and, when it ran past its last rule without filling the
-- order, why: 'no_route' (no rule's candidate locations could ever serve the order) or 'exhausted' (it
-- waits for stock). The unfillable sweep (oms_ops/unfillable.py) parks such backordered orders with an
-- auto-cancel date and, when the date comes and ops did not clear them, cancels them. A parked order keeps
-- its state ('backordered'): the allocator keeps serving it when stock arrives, and the order state machine,
-- the read model and the marts need no new state.

ALTER TABLE oms.allocation_decisions
  ADD COLUMN cascade jsonb NOT NULL DEFAULT '[]',   -- [{rule, outcome, reason}] when more than one rule was tried
  ADD COLUMN unfillable text CHECK (unfillable IN ('no_route', 'exhausted'));

CREATE TABLE oms.unfillable_orders (
  order_id bigint PRIMARY KEY REFERENCES oms.orders,
  verdict text NOT NULL CHECK (verdict IN ('no_route', 'exhausted')),
  reason text NOT NULL,                       -- the decision's reason when it was parked
  decision_id bigint REFERENCES oms.allocation_decisions,
  parked_at timestamptz NOT NULL,
  parked_by text NOT NULL,
  auto_cancel_at timestamptz,                 -- NULL: parked for ops, never cancelled by itself
  cleared_at timestamptz,                     -- ops keep it waiting as a backorder, no auto-cancel
  cleared_by text,
  clear_reason text,
  cancelled_at timestamptz,                   -- cancelled by the sweep
  resolved_at timestamptz,                    -- the order left 'backordered' some other way (allocated, cancelled)
  CHECK ((cleared_at IS NULL) = (cleared_by IS NULL))
);
-- the sweep's look for what is due: only open parkings
CREATE INDEX unfillable_orders_due_idx ON oms.unfillable_orders (auto_cancel_at)
  WHERE cleared_at IS NULL AND cancelled_at IS NULL AND resolved_at IS NULL;

-- Ops clear a parked order (Operations → Unfillable → the OMS API's unfillable.clear action, or the CLI). The
-- function checks its arguments and runs with the migrating role's rights (SECURITY DEFINER, fixed
-- search_path). The dashboards' read-only role (0016) may read the table and nothing more: it neither
-- writes it nor runs this function. Returns false when the order is not parked (or no longer).
CREATE FUNCTION oms.clear_unfillable(p_order_id bigint, p_actor text, p_reason text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  st text;
BEGIN
  IF p_actor IS NULL OR btrim(p_actor) = '' THEN
    RAISE EXCEPTION 'an operator name is required' USING ERRCODE = '22023';
  END IF;
  IF p_reason IS NULL OR btrim(p_reason) = '' OR length(p_reason) > 500 THEN
    RAISE EXCEPTION 'a reason of 1 to 500 characters is required' USING ERRCODE = '22023';
  END IF;
  -- the order first, then its parking: the sweep locks in the same order
  SELECT state INTO st FROM oms.orders WHERE order_id = p_order_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'order % not found', p_order_id USING ERRCODE = '22023';
  END IF;
  UPDATE oms.unfillable_orders
     SET cleared_at = now(), cleared_by = p_actor, clear_reason = p_reason, auto_cancel_at = NULL
   WHERE order_id = p_order_id AND cleared_at IS NULL AND cancelled_at IS NULL AND resolved_at IS NULL;
  RETURN FOUND;
END;
$$;

REVOKE ALL ON FUNCTION oms.clear_unfillable(bigint, text, text) FROM PUBLIC;
GRANT SELECT ON oms.unfillable_orders TO oms_dashboard;
