"""The demo's pace: at any hour, every channel shows orders within minutes of start (the steady profile)."""

from simulators.clock import parse_rfc3339

#: 05:15 Moscow time: the hour at which the daily curve gave about one order a minute in total
EARLY_MORNING = parse_rfc3339("2025-03-03T02:15:00Z")
CHANNELS = ["ozon", "wildberries", "shopify", "pos", "callcentre"]


def first_ten_minutes(make_stack, profile: str) -> dict[str, int]:
    stack = make_stack(
        only=CHANNELS,
        rate=3.0,
        profile=profile,
        start=EARLY_MORNING,
        options={"pos": {"drop_interval_s": 300}},
    )
    stack.advance(600)
    counts = {
        "ozon": len(stack["ozon"].postings),
        "wildberries": len({o.order.seq for o in stack["wildberries"].orders}),  # baskets
        "shopify": len(stack["shopify"].orders),
        "callcentre": len(stack["callcentre"].orders),
        "pos": sum(f["receipts"] for f in stack["pos"].files),  # receipts already in a dropped file
    }
    stack.stop()
    return counts


def test_every_channel_is_busy_within_ten_minutes_at_any_hour(make_stack):
    steady = first_ten_minutes(make_stack, "steady")
    assert all(n > 0 for n in steady.values()), steady
    assert 15 < steady["shopify"] < 50  # 3 a minute, whatever the hour
    daily = first_ten_minutes(make_stack, "daily")
    assert daily["pos"] == 0  # the shops open at 10:00 in real life
    assert sum(steady.values()) > 5 * sum(daily.values())  # the early-morning trough the steady demo removes
