"""The notification rules as pure functions (contacts, channel choice, quiet hours by the customer's time zone,
wording) and the ``notifications:`` configuration refused at load with the field named."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import yaml

from oms_ops import notifications as nt
from oms_ops.business_config import DEFAULT_PATH, BusinessConfigError, parse_business_config


def _event(**kw) -> nt.EventRow:
    base = {
        "event_id": 1, "order_id": 1, "trigger": "order_accepted", "order_number": "ORD-00000001",
        "channel_code": "webstore", "channel_kind": "webstore", "customer_name": "Анна", "phone": "+79161234567",
        "email": "anna@example.ru", "region": "Москва", "amount": Decimal("1234.50"), "currency": "RUB",
        "carrier_code": None, "tracking_number": None, "pickup_point": None,
    }  # fmt: skip
    return nt.EventRow(**{**base, **kw})


def _with(config, **policy):
    return config.model_copy(update={"notifications": config.notifications.model_copy(update=policy)})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+7 (916) 123-45-67", "79161234567"),
        ("8 916 123 45 67", "79161234567"),
        ("9161234567", "79161234567"),
        ("+7 495 123-45-67", None),  # a landline takes no SMS
        ("12-34", None),
        ("", None),
    ],
)
def test_phones_are_normalised_or_refused(raw, expected):
    assert nt.normalize_phone(raw) == expected


def test_money_is_written_the_russian_way():
    assert nt.format_amount(Decimal("1234.50")) == "1\u00a0234,50\u00a0₽"
    assert nt.format_amount(Decimal("990")) == "990\u00a0₽"


@pytest.mark.parametrize(
    ("mode", "phone", "email", "channels"),
    [
        ("both", "+79161234567", "a@example.ru", ["sms", "email"]),
        ("sms_first", "+79161234567", "a@example.ru", ["sms"]),
        ("sms_first", None, "a@example.ru", ["email"]),
        ("email_first", "+79161234567", None, ["sms"]),
        ("email_only", "+79161234567", None, ["email"]),  # suppressed: no e-mail on the order
    ],
)
def test_the_channel_policy_picks_the_channels(config, mode, phone, email, channels):
    planned = nt.decide(
        _event(phone=phone, email=email), _with(config, channels=mode), datetime(2025, 1, 1, 9, tzinfo=UTC)
    )
    assert [p.channel for p in planned] == channels
    if mode == "email_only":
        assert planned[0].status == "suppressed" and planned[0].reason == "no e-mail on the order"


def test_quiet_hours_follow_the_customers_time_zone(config):
    # 15:00 UTC: 18:00 in Moscow (an SMS goes), 22:00 in Novosibirsk (it waits for 09:00 there)
    at = datetime(2025, 11, 26, 15, 0, tzinfo=UTC)
    moscow = nt.decide(_event(email=None), config, at)
    novosibirsk = nt.decide(_event(email=None, region="Новосибирск"), config, at)
    assert moscow[0].not_before is None and moscow[0].reason is None
    assert novosibirsk[0].reason == "quiet hours: held until 09:00 Asia/Novosibirsk"
    assert novosibirsk[0].not_before == datetime(2025, 11, 27, 2, 0, tzinfo=UTC)


def test_a_refund_and_a_shipment_are_worded_with_their_figures(config):
    at = datetime(2025, 1, 1, 9, tzinfo=UTC)
    [refund] = nt.decide(_event(trigger="refund_succeeded", email=None, amount=Decimal("499.90")), config, at)
    assert refund.body == "Магазин: по заказу ORD-00000001 возвращено 499,90\u00a0₽."
    [shipped] = nt.decide(
        _event(trigger="shipped", phone=None, carrier_code="cdek", tracking_number="10203040"), config, at
    )
    assert shipped.subject == "Заказ ORD-00000001 отправлен" and "Трек-номер: 10203040" in shipped.body
    assert shipped.body_html.startswith("<p>Здравствуйте, Анна!</p>")


def test_a_marketplace_order_and_a_disabled_trigger_notify_nobody(config):
    at = datetime(2025, 1, 1, 9, tzinfo=UTC)
    assert nt.decide(_event(channel_code="ozon", channel_kind="marketplace"), config, at) == []
    tpl = config.notifications.templates["delivered"].model_copy(update={"enabled": False})
    off = _with(config, templates={**config.notifications.templates, "delivered": tpl})
    assert nt.decide(_event(trigger="delivered"), off, at) == []


def _raw_config() -> dict:
    return yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))


def test_an_unknown_placeholder_or_trigger_is_refused_naming_the_field():
    raw = _raw_config()
    raw["notifications"]["templates"]["shipped"]["sms"] = "трек {trak}"
    raw["notifications"]["templates"]["lost"] = {"sms": "x"}
    raw["notifications"]["region_timezones"]["RU-XX"] = "Europe/Moscow"
    with pytest.raises(BusinessConfigError) as err:
        parse_business_config(raw)
    text = str(err.value)
    assert "notifications.templates.shipped.sms" in text and "{trak}" in text
    assert "notifications.templates.lost" in text


def test_an_unknown_region_or_time_zone_is_refused_naming_the_field():
    raw = _raw_config()
    raw["notifications"]["region_timezones"]["RU-XX"] = "Europe/Moscow"
    with pytest.raises(BusinessConfigError, match=r"notifications.region_timezones.RU-XX: unknown region"):
        parse_business_config(raw)
    raw = _raw_config()
    raw["notifications"]["default_timezone"] = "Mars/Olympus"
    with pytest.raises(BusinessConfigError, match=r"notifications.default_timezone"):
        parse_business_config(raw)
