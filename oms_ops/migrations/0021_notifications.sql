-- Customer notifications: what the OMS told (or decided not to tell) each customer about their order, by SMS
-- and e-mail (oms_ops/notifications.py, docs/notifications.md).
--
-- One row per (order, order event that caused it, channel): a replayed event scan, a second worker or a
-- re-run never makes a second notification (UNIQUE), and the row is the log ops read ("did the customer get
-- the SMS about the tracking number?"). Sending goes through the outbox (effect notify.customer, key
-- notify.customer:notification:<id>); the row follows the delivery: queued → sent → delivered | failed, or
-- suppressed with the reason (invalid phone, opted out…), never silently dropped.

CREATE TABLE oms.notifications (
  notification_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  order_id bigint NOT NULL REFERENCES oms.orders,
  event_id bigint NOT NULL,                  -- oms.order_events.event_id of the transition that caused it
  trigger text NOT NULL,                     -- order_accepted, shipped, ready_for_pickup, delivered, cancelled, refund_succeeded
  channel text NOT NULL CHECK (channel IN ('sms', 'email')),
  recipient text,                            -- normalised phone (7XXXXXXXXXX) or e-mail; as given when invalid
  template text NOT NULL,                    -- the trigger's template in business.yaml (notifications.templates)
  subject text,                              -- e-mail only
  body text NOT NULL,                        -- the rendered text (SMS text / e-mail plain-text part)
  status text NOT NULL DEFAULT 'queued'
      CHECK (status IN ('queued', 'sent', 'delivered', 'failed', 'suppressed')),
  reason text,                               -- why suppressed / failed / still queued (quiet hours)
  not_before timestamptz NOT NULL DEFAULT now(),  -- quiet hours: handed to the outbox from this time on
  outbox_key text UNIQUE,                    -- the outbox effect's idempotency key (set when handed over)
  provider_id text,                          -- SMS gateway's sms_id / the e-mail's Message-ID
  provider_status text,                      -- the gateway's last status code (SMS: 100…108)
  attempts integer NOT NULL DEFAULT 0,       -- delivery attempts (the outbox retries with back-off)
  created_at timestamptz NOT NULL DEFAULT now(),
  sent_at timestamptz,
  delivered_at timestamptz,
  failed_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (order_id, event_id, channel),
  CHECK (status <> 'suppressed' OR reason IS NOT NULL)
);
CREATE INDEX notifications_order_idx ON oms.notifications (order_id, notification_id);
CREATE INDEX notifications_due_idx ON oms.notifications (not_before) WHERE status = 'queued' AND outbox_key IS NULL;
CREATE INDEX notifications_tracking_idx ON oms.notifications (notification_id)
  WHERE channel = 'sms' AND status = 'sent';

-- Customers (by phone or e-mail) or single orders that asked not to be notified; channel NULL = every channel.
CREATE TABLE oms.notification_opt_outs (
  opt_out_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  order_id bigint REFERENCES oms.orders,
  phone text,                                -- normalised 7XXXXXXXXXX
  email text,                                -- lower case
  channel text CHECK (channel IN ('sms', 'email')),
  reason text,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  CHECK (num_nonnulls(order_id, phone, email) = 1)
);
CREATE UNIQUE INDEX notification_opt_outs_uidx
  ON oms.notification_opt_outs (coalesce(order_id, 0), coalesce(phone, ''), coalesce(email, ''), coalesce(channel, ''));

-- Where the scan of oms.order_events stands. One row. ``floor_event_id``: events that existed when this
-- migration ran are history, never notified (a first deployment must not message every past customer).
CREATE TABLE oms.notification_scan (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  last_event_id bigint NOT NULL,
  floor_event_id bigint NOT NULL,
  scanned_at timestamptz
);
INSERT INTO oms.notification_scan (last_event_id, floor_event_id)
SELECT coalesce(max(event_id), 0), coalesce(max(event_id), 0) FROM oms.order_events;

-- The dashboards read them (recipients masked by role in the page); changes go through the OMS.
GRANT SELECT ON oms.notifications, oms.notification_opt_outs, oms.notification_scan TO oms_dashboard;
