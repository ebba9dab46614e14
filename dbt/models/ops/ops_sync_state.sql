-- Where each feed stands, one row per feed: its health (connectors.feed_status: last success and its age,
-- last error, what the last poll fetched) and its most recently advanced cursor (connectors.cursors). A
-- cursor belongs to the feed whose name it equals or starts with followed by ':' ('ozon:postings' → 'ozon',
-- the longest such feed), else to the feed named by its first ':'-separated part — so a feed whose cursor
-- was seeded but which never ran shows up, with no success. is_failing: the last error is newer than the
-- last success.
with cursor_feeds as (
    select
        c.name as cursor_name,
        c.value as cursor_value,
        c.updated_at as cursor_updated_at,
        coalesce(
            (
                select f.feed from {{ source('connectors_live', 'feed_status') }} as f
                where c.name = f.feed or starts_with(c.name, f.feed || ':')
                order by length(f.feed) desc
                limit 1
            ),
            split_part(c.name, ':', 1)
        ) as feed
    from {{ source('connectors_live', 'cursors') }} as c
),

latest_cursor as (
    select distinct on (feed)
        feed,
        cursor_name,
        cursor_value,
        cursor_updated_at,
        count(*) over (partition by feed) as cursors
    from cursor_feeds
    order by feed asc, cursor_updated_at desc, cursor_name asc
),

feeds as (
    select feed from {{ source('connectors_live', 'feed_status') }}
    union
    select feed from cursor_feeds
)

select
    feeds.feed,
    s.last_success_at,
    round(cast(extract(epoch from (now() - s.last_success_at)) as numeric), 1) as success_age_seconds,
    s.last_error_at,
    s.last_error,
    coalesce(s.last_error_at > coalesce(s.last_success_at, '-infinity'::timestamptz), false) as is_failing,
    coalesce(s.last_fetched, 0) as last_fetched,
    coalesce(s.total_fetched, 0) as total_fetched,
    c.cursor_name,
    c.cursor_value,
    c.cursor_updated_at,
    coalesce(c.cursors, 0) as cursors
from feeds
left join {{ source('connectors_live', 'feed_status') }} as s on feeds.feed = s.feed
left join latest_cursor as c on feeds.feed = c.feed
