-- Payments the OMS takes itself through the payment provider (YooKassa): payment links, and what a refund
-- was sent against (docs/payments.md).
--
-- oms.payment_links: one row per payment the OMS asked the provider for — the whole order (a call-centre
-- order, an own channel's prepaid order still unpaid) or the difference after a paid order grew. The row is
-- written with the outbox's 'payment.create' effect under the same idempotency key (which is also the
-- provider's Idempotence-Key), so a replayed effect finds it and the provider answers with the same payment.
-- ``confirmation_url`` is the link the customer pays on; ``status`` mirrors the provider's payment status
-- ('requested' until the provider answered, 'failed' when it refused: ``error`` says why).
CREATE TABLE oms.payment_links (
  link_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  order_id bigint NOT NULL REFERENCES oms.orders,
  provider text NOT NULL DEFAULT 'yookassa',
  purpose text NOT NULL CHECK (purpose IN ('order', 'difference')),
  amount numeric(14,2) NOT NULL CHECK (amount > 0),
  currency text NOT NULL DEFAULT 'RUB',
  note text,                                   -- why: e.g. the order change whose growth it charges
  idempotency_key text NOT NULL UNIQUE,        -- the outbox key of 'payment.create' = Idempotence-Key
  provider_payment_id text,
  confirmation_url text,
  status text NOT NULL DEFAULT 'requested'
      CHECK (status IN ('requested', 'pending', 'waiting_for_capture', 'succeeded', 'canceled', 'failed', 'skipped')),
  error text,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (provider, provider_payment_id)
);
CREATE INDEX payment_links_order_idx ON oms.payment_links (order_id);
-- the safety-net poll reads the links still waiting for the customer
CREATE INDEX payment_links_open_idx ON oms.payment_links (updated_at)
  WHERE status IN ('requested', 'pending', 'waiting_for_capture');

-- A refund sent to the provider: the payment it refunds (chosen once and kept, so a replay with the same
-- Idempotence-Key sends the same body) and, when the provider refused or cancelled it, why.
ALTER TABLE oms.refunds ADD COLUMN provider_payment_id text;
ALTER TABLE oms.refunds ADD COLUMN failure_reason text;

-- The dashboards read them; every change goes through the OMS (0016).
GRANT SELECT ON oms.payment_links TO oms_dashboard;
