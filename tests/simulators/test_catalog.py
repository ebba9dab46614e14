"""The catalog is a stable public contract: the OMS loads its product table from the same function."""

import re

from simulators import generate_catalog, is_valid_ean13
from simulators.catalog import ean13_check_digit


def test_same_seed_same_catalog_and_prefix_stable():
    small, big = generate_catalog(42, 50), generate_catalog(42, 120)
    assert small == generate_catalog(42, 50)
    assert big[:50] == small  # growing the catalog never changes existing products
    assert generate_catalog(43, 50) != small


def test_products_have_valid_unique_identifiers():
    catalog = generate_catalog(42, 300)
    for field in ("sku", "barcode", "name", "ozon_product_id", "ozon_sku", "wb_nm_id", "wb_chrt_id",
                  "shopify_variant_id", "shopify_inventory_item_id"):  # fmt: skip
        values = [getattr(p, field) for p in catalog]
        assert len(set(values)) == len(values), field
    assert all(is_valid_ean13(p.barcode) for p in catalog)
    assert all(p.offer_id == p.sku for p in catalog)


def test_products_are_realistic():
    for p in generate_catalog(1, 100):
        assert re.search("[а-яА-ЯёЁ]", p.name), p.name  # Russian names
        assert p.price > 0 and p.price == p.price.quantize(p.price.__class__("0.01"))
        assert p.weight_g > 0 and all(d > 0 for d in p.dimensions)


def test_ean13_check_digit_known_value():
    # 4·1 + 6·3 + 0·1 + 1·3 + 2·1 + 3·3 + 4·1 + 5·3 + 6·1 + 7·3 + 8·1 + 9·3 = 117 → check digit 3
    assert ean13_check_digit("460123456789") == "3"
    assert is_valid_ean13("4601234567893")
    assert not is_valid_ean13("4601234567890")
