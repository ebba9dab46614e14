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


def test_every_channel_payload_shape_is_masked():
    """The raw shapes of the channels' order payloads (simulators/*.py) — each names the same data its own way."""
    shopify = {
        "name": "#1017",
        "email": "ivan@mail.ru",
        "contact_email": "ivan@mail.ru",
        "phone": "+79151234512",
        "note": "позвонить заранее",
        "customer": {"id": 7000000001, "first_name": "Иван", "last_name": "Петров", "verified_email": True},
        "shipping_address": {
            "first_name": "Иван",
            "name": "Иван Петров",
            "address1": "ул. Ленина, 5",
            "address2": "кв. 7",
            "city": "Казань",
            "province": "Татарстан",
            "country_code": "RU",
            "zip": "420000",
            "phone": "+79151234512",
            "company": "ООО Ромашка",
            "latitude": 55.79,
            "longitude": 49.12,
        },
        "line_items": [{"name": "Чайник", "title": "Чайник", "sku": "SKU-1"}],
    }
    m = mask_tree(shopify, True)
    assert m["name"] == "#1017" and m["line_items"] == shopify["line_items"]
    assert (m["email"], m["contact_email"], m["phone"], m["note"]) == (
        "i***@mail.ru",
        "i***@mail.ru",
        "+7 *** ***-**-12",
        "***",
    )
    assert m["customer"] == {"id": "***", "first_name": "И***", "last_name": "П***", "verified_email": True}
    assert m["shipping_address"] == {
        "first_name": "И***",
        "name": "***",
        "address1": "***",
        "address2": "***",
        "city": "Казань",
        "province": "Татарстан",
        "country_code": "RU",
        "zip": "***",
        "phone": "+7 *** ***-**-12",
        "company": "***",
        "latitude": None,
        "longitude": None,
    }
    wildberries = {
        "address": {"fullAddress": "Москва, ул. Тверская, д. 1", "latitude": 55.7, "longitude": 37.6},
        "comment": "домофон 12",
        "offices": ["Москва"],
    }
    assert mask_tree(wildberries, True) == {
        "address": {"fullAddress": "***", "latitude": None, "longitude": None},
        "comment": "***",
        "offices": ["Москва"],
    }
    callcentre = {
        "customer": {"full_name": "Петрова Мария", "phone": "8 (916) 123-45-67", "email": None},
        "delivery": {"region": "Москва", "city": "Москва", "postcode": "101123", "address": "ул. Садовая, 5"},
        "comment": "после 18",
    }
    assert mask_tree(callcentre, True) == {
        "customer": {"full_name": "П*** М***", "phone": "+7 *** ***-**-67", "email": None},
        "delivery": {"region": "Москва", "city": "Москва", "postcode": "***", "address": "***"},
        "comment": "***",
    }
    ozon_rfbs = {  # Ozon's rFBS posting: customer and addressee objects
        "customer": {
            "name": "Иван",
            "phone": "+79150000001",
            "address": {"address_tail": "д. 1", "zip_code": "1"},
        },
        "addressee": {"name": "Иван", "phone": "+79150000001"},
    }
    masked = mask_tree(ozon_rfbs, True)
    assert masked["customer"] == {
        "name": "***",
        "phone": "+7 *** ***-**-01",
        "address": {"address_tail": "***", "zip_code": "***"},
    }
    assert masked["addressee"] == {"name": "***", "phone": "+7 *** ***-**-01"}
    cdek = {
        "recipient": {"name": "Иван", "phones": [{"number": "+79150000000"}]},
        "to_location": {"city": "Казань"},
    }
    assert mask_tree(cdek, True)["recipient"] == {"name": "***", "phones": [{"number": "+7 *** ***-**-00"}]}
    shopify_return = {
        "customer_note": "Маломерит",
        "return_reason_note": "",
        "buyer_comment": "x",
        "quantity": 1,
    }
    assert mask_tree(shopify_return, True) == {
        "customer_note": "***",
        "return_reason_note": "",
        "buyer_comment": "***",
        "quantity": 1,
    }


@pytest.mark.parametrize(
    "key",
    [
        "address1", "address2", "fullAddress", "full_address", "zip", "postcode", "postal_code", "postCode",
        "street", "house", "flat", "apartment", "comment", "note", "customer_note", "buyer_comment", "reason_text",
    ],
)  # fmt: skip
def test_address_and_free_text_keys_of_any_spelling_are_hidden(key):
    assert mask_tree({key: "secret"}, True) == {key: "***"}
    nested = {"next_channel": {"deep": [{key: "secret", "sku": "SKU-1"}]}}
    assert mask_tree(nested, True) == {"next_channel": {"deep": [{key: "***", "sku": "SKU-1"}]}}


@pytest.mark.parametrize(
    ("key", "masked"),
    [
        ("recipientPhone", "+7 *** ***-**-12"),
        ("buyer_email", "i***@mail.ru"),
        ("lat", None),
        ("lng", None),
        ("recipient_name", "И*** П***"),
        ("fio", "И*** П***"),
    ],
)
def test_key_words_decide_the_mask(key, masked):
    value = {"recipientPhone": "+7 915 123-45-12", "buyer_email": "ivan@mail.ru"}.get(key, "Иван Петров")
    assert mask_tree({key: value}, True)[key] == masked


def test_personal_data_inside_other_text_is_masked_but_numbers_are_not():
    row = {
        "reason": "customer asked: call +7 915 123-45-12 or ivan@mail.ru",
        "tracking_number": "1234567890",
        "barcode": "2000000123456",
        "placed": "2025-11-26T06:00:00+00:00",
        "status_name": "Вручен",
        "warehouse_name": "Склад Москва",
    }
    masked = mask_row(row, True)
    assert masked["reason"] == "customer asked: call +7 *** ***-**-12 or i***@mail.ru"
    assert {k: v for k, v in masked.items() if k != "reason"} == {
        k: v for k, v in row.items() if k != "reason"
    }


def test_order_and_return_rows_hide_every_personal_column():
    order = {
        "customer_name": "Иван Петров",
        "address": "ул. Тверская, 1",
        "city": "Москва",
        "lat": 1.0,
        "lon": 2.0,
    }
    assert mask_row(order, True) == {
        "customer_name": "И*** П***",
        "address": "***",
        "city": "Москва",
        "lat": None,
        "lon": None,
    }
    ret = {
        "rma_number": "RMA-1",
        "note": "screen cracked, call 8 915 123-45-12",
        "lines": [{"reason_text": "x"}],
    }
    assert mask_row(ret, True) == {"rma_number": "RMA-1", "note": "***", "lines": [{"reason_text": "***"}]}
