"""Business configuration: the sample validates, broken files name every bad field, sync upserts the DB."""

from __future__ import annotations

import copy
from datetime import time

import pytest
import yaml

from oms_ops.business_config import (
    DEFAULT_PATH,
    BusinessConfigError,
    load_business_config,
    parse_business_config,
    sync_reference_data,
)

SAMPLE = yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))


def broken(edit) -> str:
    data = copy.deepcopy(SAMPLE)
    edit(data)
    with pytest.raises(BusinessConfigError) as exc:
        parse_business_config(data)
    return str(exc.value)


def test_sample_validates_and_describes_a_russian_multichannel_seller():
    cfg = load_business_config()
    assert {c.code for c in cfg.channels} == {"ozon", "wildberries", "webstore", "offline", "callcentre"}
    warehouses = {loc.city for loc in cfg.locations if loc.kind == "warehouse"}
    assert {"Подольск", "Санкт-Петербург", "Казань", "Екатеринбург", "Новосибирск"} <= warehouses
    kinds = {loc.kind for loc in cfg.locations}
    assert kinds == {"warehouse", "store", "pickup_point"}
    assert {c.code for c in cfg.carriers} == {"cdek", "own_courier"}
    assert cfg.location_by_code["WH-MSK-POD"].cutoff_local == time(16, 0)
    assert cfg.routing_rules[-1].name == "default"
    assert cfg.reservations.expiry_minutes("webstore") == 30
    assert cfg.reservations.expiry_minutes("ozon") is None


def test_lookups_safety_stock_sla_and_pools():
    cfg = load_business_config()
    assert cfg.safety_stock_for("ozon", "WH-KZN", "SKU-1") == 1
    assert cfg.safety_stock_for("ozon", "WH-KZN", "PROMO-7") == 3  # per SKU class
    assert cfg.safety_stock_for("webstore", "ST-MSK-1", "SKU-1") == 2  # per location kind
    assert cfg.safety_stock_for("webstore", "WH-KZN", "SKU-1") == 0
    assert cfg.sla_for("ozon", "courier").ship_by_hours == 24
    assert cfg.sla_for("webstore", "courier").promise_days == 4  # channel + method beats method
    assert cfg.sla_for("webstore", "store_pickup").promise_days == 3
    assert cfg.sla_for("callcentre", "courier").promise_days == 6  # default
    assert set(cfg.channel_pool("ozon")) == {"WH-MSK-POD", "WH-SPB-SHU", "WH-KZN", "WH-EKB", "WH-NSK"}
    assert "PP-MSK-1" not in cfg.channel_pool("offline")
    assert cfg.fingerprint == load_business_config().fingerprint


def test_invalid_time_names_the_field():
    msg = broken(lambda d: d["locations"][3].__setitem__("cutoff_local", "25:61"))
    assert "locations[3].cutoff_local: invalid time '25:61'" in msg


def test_unquoted_yaml_time_is_explained():
    # YAML 1.1 reads an unquoted 16:00 as the sexagesimal integer 960
    msg = broken(lambda d: d["locations"][0].__setitem__("cutoff_local", 960))
    assert "locations[0].cutoff_local" in msg and "quote it" in msg


def test_every_problem_is_reported_with_its_path():
    def edit(d):
        d["locations"][1]["timezone"] = "Europe/Atlantis"
        d["locations"][2]["kind"] = "depot"
        d["carriers"][0]["tariffs"][0]["rates"]["1"] = [100, 200]
        d["routing_rules"][1]["sort_by"] = ["cost/50", "speed"]
        d["routing_rules"][2]["split"] = {"policy": "min_shipment_value"}
        d["routing_rules"][3]["split"] = {"policy": "above_order_value", "threshold": 15000}
        d["routing_rules"][4]["strategy"] = "cheapest"

    msg = broken(edit)
    for expected in (
        "locations[1].timezone: unknown time zone 'Europe/Atlantis'",
        "locations[2].kind:",
        "carriers[0].tariffs[0]: rates[1] has 2 values for 9 weight bands",
        "routing_rules[1].sort_by[1].key:",
        "routing_rules[2].split: policy min_shipment_value needs a threshold",
        # the order-total threshold became a per-shipment minimum: the old name is refused, not reread
        "routing_rules[3].split: policy 'above_order_value' was replaced by 'min_shipment_value'",
        "routing_rules[4].strategy:",
    ):
        assert expected in msg


def test_cross_references_are_checked():
    def edit(d):
        d["channels"][0]["ats_pool"] = ["warehouses", "depots"]
        d["locations"][0]["region"] = "RU-XX"
        d["routing_rules"][0]["candidates"] = ["pickup_location", {"codes": ["WH-NOWHERE"]}]
        d["routing_rules"][3]["match"]["channels"] = ["aliexpress"]
        d["carriers"][0]["zone_rule"]["region_overrides"]["RU-MOW"]["RU-MOS"] = "9"
        d["routing_rules"].append(
            {"name": "late", "match": {"channels": ["ozon"]}, "candidates": ["all"], "sort_by": ["cost"]}
        )

    msg = broken(edit)
    for expected in (
        "channels[0].ats_pool[1]: unknown location group 'depots'",
        "locations[0].region: unknown region 'RU-XX'",
        "routing_rules[0].candidates[1].codes[0]: unknown location 'WH-NOWHERE'",
        "routing_rules[3].match.channels[0]: unknown channel 'aliexpress'",
        "carriers[0].zone_rule.region_overrides.RU-MOW.RU-MOS: unknown zone '9'",
        "routing_rules[7].match: the last rule must match every order",
    ):
        assert expected in msg


def test_duplicates_and_missing_default_sla():
    def edit(d):
        d["locations"][4]["code"] = d["locations"][0]["code"]
        d["sla"] = [s for s in d["sla"] if s.get("channel") or s.get("delivery_method")]

    msg = broken(edit)
    assert "locations[4]: duplicate 'WH-MSK-POD'" in msg
    assert "sla: needs a default entry" in msg


def test_broken_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "business.yaml"
    path.write_text("channels: [\n", encoding="utf-8")
    with pytest.raises(BusinessConfigError, match="business.yaml"):
        load_business_config(path)


def test_sync_upserts_reference_data_and_deactivates_what_left(conn):
    cfg = load_business_config()
    assert sync_reference_data(conn, cfg) == {"channels": 5, "locations": len(cfg.locations)}
    row = conn.execute(
        "SELECT kind, region, timezone, cutoff_local, capacity_per_day, ships, hands_over FROM oms.locations "
        "WHERE location_code = 'WH-EKB'"
    ).fetchone()
    assert row == ("warehouse", "RU-SVE", "Asia/Yekaterinburg", time(14, 0), 2000, True, False)

    data = copy.deepcopy(SAMPLE)
    data["locations"] = [loc for loc in data["locations"] if loc["code"] != "PP-NSK-1"]
    data["locations"][0]["capacity_per_day"] = 9000
    smaller = parse_business_config(data)
    sync_reference_data(conn, smaller)
    sync_reference_data(conn, smaller)  # idempotent
    assert conn.execute("SELECT active FROM oms.locations WHERE location_code = 'PP-NSK-1'").fetchone() == (
        False,
    )
    assert conn.execute(
        "SELECT capacity_per_day FROM oms.locations WHERE location_code = 'WH-MSK-POD'"
    ).fetchone() == (9000,)
    versions = {r[0] for r in conn.execute("SELECT fingerprint FROM oms.business_config_versions")}
    assert versions == {cfg.fingerprint, smaller.fingerprint}
