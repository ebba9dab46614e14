-- Ingest: find a channel's pending raw rows without walking the other channels'.
--
-- The normaliser takes the oldest pending rows of ONE channel (ORDER BY raw_id LIMIT n, under the channel's
-- lock). With the pending index on raw_id alone, every batch walked the pending rows of all channels from
-- the start and fetched each heap row only to drop it on channel_code — the channels' rows are interleaved
-- by arrival, so the work per batch grew with the backlog (a 200k-order sweep spent ~10 s there). Keyed by
-- (channel_code, raw_id), a channel's pending rows are one contiguous range in received order; the other
-- readers (lock_for_inline, pending_raw_orders, the dashboards' pending count) filter by channel too.
CREATE INDEX channel_orders_pending_channel_idx ON raw.channel_orders (channel_code, raw_id)
  WHERE normalized_at IS NULL;
DROP INDEX raw.channel_orders_pending_idx;
