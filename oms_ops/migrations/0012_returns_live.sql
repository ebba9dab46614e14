-- The return leg from the operations page: ops receive a returned parcel (received units per line), inspect it
-- (restock or write off per line) and refund it, through oms_ops.services.returns as the dashboards' role.
--
-- Receiving and inspecting write the return lines (qty_received, disposition, inspected_at); everything else
-- these actions write (returns, order lines, events, ledger, stock, refunds, outbox) is granted by 0006.
GRANT UPDATE (qty_received, disposition, inspected_at) ON oms.return_lines TO oms_dashboard;
