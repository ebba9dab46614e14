-- Allocation write path: let line state changes be HOT updates.
--
-- Every allocated line changes state (new → allocated, later picked, packed, shipped ...). With `state` in
-- an index predicate (order_lines_open_sku_idx) each of those updates had to add entries to every index
-- of the table (primary key, the unique (order_id, line_no), order_lines_order_idx). No query reads lines
-- by (sku, open state) — the allocator finds waiting lines through their order — so the partial index
-- goes, and with it the last indexed column an update of state touches. order_lines_order_idx duplicated
-- the leading column of UNIQUE (order_id, line_no), which serves the same lookups.
-- A fill factor below 100 leaves room on each page for the new row version, which HOT needs.
DROP INDEX oms.order_lines_open_sku_idx;
DROP INDEX oms.order_lines_order_idx;
ALTER TABLE oms.order_lines SET (fillfactor = 85);
