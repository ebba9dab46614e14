"""Customer data masking: one helper, used by every page for roles with masked PII (managers)."""

import pytest

from dashboards.masking import mask_address, mask_email, mask_name, mask_phone, mask_row, mask_rows, mask_tree
from oms_ops.users import User


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("Иван Петров", "И*** П***"),
        ("Петров Иван Сергеевич", "П*** И*** С***"),
        ("  Anna  ", "A***"),
        ("", ""),
        (None, None),
    ],
)
def test_names_keep_only_initials(raw, masked):
    assert mask_name(raw) == masked


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("+7 915 123-45-12", "+7 *** ***-**-12"),
        ("8 (915) 123-45-12", "+7 *** ***-**-12"),
        ("79151234512", "+7 *** ***-**-12"),
        ("+375 29 123-45-67", "+3 *** ***-**-67"),
        ("123", "***"),
        (None, None),
    ],
)
def test_phones_keep_country_code_and_last_two_digits(raw, masked):
    assert mask_phone(raw) == masked


def test_emails_and_addresses():
    assert mask_email("ivan.petrov@mail.ru") == "i***@mail.ru"
    assert mask_email("not-an-email") == "***"
    assert mask_address("ул. Тверская, д. 1, кв. 5") == "***"
    assert mask_address(None) is None


def test_rows_are_masked_only_when_asked():
    row = {
        "order_number": "ORD-1",
        "customer_name": "Иван Петров",
        "customer_phone": "+7 915 123-45-12",
        "customer_email": "ivan@mail.ru",
        "address": "ул. Тверская, 1",
        "city": "Москва",
        "lat": 55.7,
        "lon": 37.6,
    }
    assert mask_row(row, False) == row
    masked = mask_row(row, True)
    assert masked == {
        "order_number": "ORD-1",
        "customer_name": "И*** П***",
        "customer_phone": "+7 *** ***-**-12",
        "customer_email": "i***@mail.ru",
        "address": "***",
        "city": "Москва",
        "lat": None,
        "lon": None,
    }
    assert row["customer_name"] == "Иван Петров"  # the input is not changed
    assert mask_rows([row], True) == [masked]


def test_json_payloads_are_masked_at_any_depth():
    payload = {
        "external_id": "X-1",
        "customer_phone": "+7 915 000-00-99",
        "lines": [{"sku": "SKU-1", "name": "Чайник"}],
        "customer": {"name": "Иван Петров", "contacts": {"phone": "89150000099", "note": "звонить после 18"}},
        "delivery": {"address": "ул. Ленина, 5", "city": "Казань"},
    }
    masked = mask_tree(payload, True)
    assert masked["external_id"] == "X-1"
    assert masked["customer_phone"] == "+7 *** ***-**-99"
    assert masked["lines"] == [{"sku": "SKU-1", "name": "Чайник"}]  # product names are not personal
    assert masked["customer"] == {"name": "***", "contacts": {"phone": "+7 *** ***-**-99", "note": "***"}}
    assert masked["delivery"] == {"address": "***", "city": "Казань"}
    assert mask_tree(payload, False) is payload


def test_managers_are_the_masked_role():
    assert User("m", "manager", "x").masked_pii
    assert not User("o", "ops", "x").masked_pii
    assert not User("a", "admin", "x").masked_pii
