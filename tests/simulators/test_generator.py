"""Order streams: reproducible from a seed and shaped like real demand."""

from collections import Counter
from datetime import timedelta

import pytest

from simulators import OrderGenerator, generate_catalog, generate_orders, start_simulators
from simulators.clock import DEFAULT_EPOCH
from simulators.generator import MOSCOW_UTC_OFFSET

CATALOG = generate_catalog(5, 150)


def test_same_seed_same_orders():
    a = [o.to_dict() for o in generate_orders(5, "shopify", 200, catalog=CATALOG)]
    b = [o.to_dict() for o in generate_orders(5, "shopify", 200, catalog=CATALOG)]
    assert a == b
    c = [o.to_dict() for o in generate_orders(6, "shopify", 200, catalog=CATALOG)]
    assert a != c


def test_order_content_does_not_depend_on_how_the_stream_is_read():
    by_take = OrderGenerator(5, "ozon", 20, catalog=CATALOG).take(300)
    stepped = OrderGenerator(5, "ozon", 20, catalog=CATALOG)
    by_time = []
    t = DEFAULT_EPOCH
    while len(by_time) < 300:
        t += timedelta(minutes=7)
        by_time += stepped.until(t)
    assert [o.to_dict() for o in by_time[:300]] == [o.to_dict() for o in by_take]


def test_channels_are_independent_streams():
    ozon = generate_orders(5, "ozon", 50, catalog=CATALOG)
    wb = generate_orders(5, "wildberries", 50, catalog=CATALOG)
    assert [o.created_at for o in ozon] != [o.created_at for o in wb]


def test_demand_shape_over_a_day():
    gen = OrderGenerator(11, "shopify", 6.0, catalog=CATALOG)
    orders = gen.until(DEFAULT_EPOCH + timedelta(days=2))
    n = len(orders)
    assert 0.9 * 2 * 1440 * 6 < n < 1.1 * 2 * 1440 * 6  # the rate is the daily mean per minute

    sizes = Counter(len(o.lines) for o in orders)
    assert (sizes[1] + sizes[2] + sizes[3]) / n > 0.85  # mostly 1–3 SKUs per basket
    assert sizes[1] > sizes[2] > sizes[3]

    units = Counter()
    for o in orders:
        for line in o.lines:
            units[line.sku] += line.qty
    top5 = sum(q for _, q in units.most_common(5))
    assert top5 / sum(units.values()) > 0.25  # a handful of very hot SKUs (Zipf)

    cities = Counter(o.address.city for o in orders)
    assert cities.most_common(1)[0][0] == "Москва"
    assert cities["Москва"] > cities["Санкт-Петербург"] > cities["Хабаровск"]

    hours = Counter((o.created_at + timedelta(hours=MOSCOW_UTC_OFFSET)).hour for o in orders)
    assert hours[20] > 3 * hours[3]  # evening peak, night trough

    methods = Counter(o.delivery_method for o in orders)
    assert set(methods) == {"courier", "pickup_point", "store_pickup"}
    assert all(o.store_code for o in orders if o.delivery_method == "store_pickup")
    assert all(o.pickup_point_code for o in orders if o.delivery_method == "pickup_point")


def test_customers_look_russian():
    for o in generate_orders(3, "callcentre", 30, catalog=CATALOG):
        assert o.customer.phone.startswith("+79") and len(o.customer.phone) == 12
        assert o.address.postcode.isdigit() and len(o.address.postcode) == 6
        assert any("а" <= ch <= "я" for ch in o.customer.last_name.lower())


def test_zero_rate_means_no_orders():
    assert OrderGenerator(1, "ozon", 0, catalog=CATALOG).until(DEFAULT_EPOCH + timedelta(days=3)) == []


def test_steady_profile_spreads_the_daily_volume_over_every_hour():
    orders = OrderGenerator(11, "shopify", 6.0, catalog=CATALOG, profile="steady").until(
        DEFAULT_EPOCH + timedelta(days=2)
    )
    assert 0.9 * 2 * 1440 * 6 < len(orders) < 1.1 * 2 * 1440 * 6  # same daily volume as the daily curve
    hours = Counter((o.created_at + timedelta(hours=MOSCOW_UTC_OFFSET)).hour for o in orders)
    assert min(hours.values()) > 0.8 * max(hours.values())  # 05:00 is as busy as 20:00
    night, evening = sum(hours[h] for h in (3, 4, 5)), sum(hours[h] for h in (19, 20, 21))
    assert 0.85 < night / evening < 1.15
    # buyers change their mind within minutes, while a demo can still stop the order
    cancels = [o.cancel_after_s for o in orders if o.cancel_after_s is not None]
    assert cancels and all(60 <= c <= 900 for c in cancels)
    daily = OrderGenerator(11, "shopify", 6.0, catalog=CATALOG).until(DEFAULT_EPOCH + timedelta(days=2))
    daily_cancels = [o.cancel_after_s for o in daily if o.cancel_after_s is not None]
    assert all(300 <= c <= 8 * 3600 for c in daily_cancels) and max(daily_cancels) > 3600


def test_profile_changes_when_orders_come_not_what_they_are():
    daily = OrderGenerator(5, "ozon", 20, catalog=CATALOG).take(50)
    steady = OrderGenerator(5, "ozon", 20, catalog=CATALOG, profile="steady").take(50)
    assert [(o.customer, o.lines, o.delivery_method) for o in daily] == [
        (o.customer, o.lines, o.delivery_method) for o in steady
    ]
    assert [o.created_at for o in daily] != [o.created_at for o in steady]


def test_an_unknown_profile_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="daily, steady"):
        OrderGenerator(1, "ozon", 1, catalog=CATALOG, profile="weekly")
    with pytest.raises(ValueError, match="daily, steady"):
        start_simulators(manual=True, only=["ozon"], profile="weekly")
