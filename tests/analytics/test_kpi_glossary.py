"""The KPI glossary page, the seed behind dim_kpi and the agg_kpi_daily columns describe the same KPIs."""

from __future__ import annotations

import csv
import re

import yaml

from oms_ops.platform.dbt_env import DBT_PROJECT_DIR
from tests.paths import ROOT


def test_every_kpi_has_a_page_entry_a_mart_column_and_a_unit_test():
    seed = list(csv.DictReader((DBT_PROJECT_DIR / "seeds" / "kpi_glossary.csv").open()))
    page = (ROOT / "docs" / "kpi-glossary.md").read_text()
    marts = yaml.safe_load((DBT_PROJECT_DIR / "models" / "marts" / "_marts__models.yml").read_text())
    agg = next(m for m in marts["models"] if m["name"] == "agg_kpi_daily")
    described = {c["name"]: c.get("description", "") for c in agg["columns"]}
    unit_tests = (DBT_PROJECT_DIR / "models" / "marts" / "_kpi__unit_tests.yml").read_text()
    for kpi in seed:
        assert f"Code `{kpi['kpi_code']}`" in page, kpi["kpi_code"]
        for column in re.split(r"\s*/\s*", kpi["mart_column"]):
            assert described.get(column), f"{kpi['kpi_code']}: agg_kpi_daily.{column} missing or undescribed"
            assert f"`{column}`" in page, f"{column} not named on the glossary page"
            if kpi["unit"] in ("percent", "hours") or column == "shipping_cost_per_order":
                assert column in unit_tests, f"{column}: no dbt unit test"
