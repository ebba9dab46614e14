"""Channel mappings panel of the operations page (ops, admin): how each channel's warehouses and items map
onto OMS locations and SKUs, as discovery found them, and where ops correct them.

Discovery (``oms_ops.services.discovery``) reads every channel account's warehouses/locations and listings
through the channel's own endpoints and maps them by name and article. What it could not map is listed first:
an unmapped warehouse receives no stock push, an unmatched item sells nothing through the OMS. A mapping set
here is kept by every later discovery run. Both actions are ``mappings.*`` actions of the OMS API
(``dashboards.common.act``), which calls the checking functions of migration 0015 under the OMS's own login.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards.common import READ_TTL_S, act, pg, require_database, require_role, run_action, show_flash
from oms_ops import dashboard_queries as dq
from oms_ops.services import discovery
from oms_ops.users import User

FLASH = "flash_mappings"
UNMAPPED = "— unmapped —"


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _locations(url: str) -> list[dict]:
    return pg(discovery.location_mappings, url)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _listings(url: str, unmatched_only: bool) -> list[dict]:
    return pg(discovery.listing_mappings, url, unmatched_only=unmatched_only)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _runs(url: str) -> list[dict]:
    return pg(discovery.last_runs, url)


@st.cache_data(ttl=60, show_spinner=False)
def _oms_locations(url: str) -> list[str]:
    return [r["location_code"] for r in pg(dq.active_locations, url, kinds=["warehouse", "store"])]


def _map_location(url: str, user: User, system: str, external_id: str, code: str | None) -> None:
    run_action(
        FLASH,
        lambda: act("mappings.location", system=system, external_id=external_id, location_code=code)[
            "message"
        ],
    )


def _map_listing(url: str, user: User, channel: str, key: str, sku: str | None) -> None:
    run_action(FLASH, lambda: act("mappings.listing", channel_code=channel, key=key, sku=sku)["message"])


def mappings_panel() -> None:
    user = require_role("operations")
    url = require_database()
    show_flash(FLASH)
    runs = _runs(url)
    if not runs:
        st.info(
            "No channel has been discovered yet. The worker discovers every configured channel on its first "
            "start; `oms discover` (or the channel_discovery asset in Dagster) runs it again."
        )
        return
    st.dataframe(pd.DataFrame(runs), hide_index=True, width="stretch", key="discovery_runs_table")
    _location_section(url, user)
    _listing_section(url, user)


def _location_section(url: str, user: User) -> None:
    st.subheader("Warehouses and locations")
    rows = _locations(url)
    open_rows = [r for r in rows if r["location_code"] is None and r["listed"]]
    if open_rows:
        st.warning(f"{len(open_rows)} channel location(s) are not mapped: they receive no stock.")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="location_mappings_table")
    if not rows:
        return
    choices = {f"{r['channel']} · {r['name']} ({r['external_id']})": r for r in rows}
    c1, c2, c3 = st.columns([3, 2, 1])
    picked = c1.selectbox("Channel location", list(choices), key="map_loc_pick")
    row = choices.get(picked) if picked else None
    codes = [UNMAPPED, *_oms_locations(url)]
    current = row["location_code"] if row else None
    target = c2.selectbox(
        "OMS location", codes, index=codes.index(current) if current in codes else 0, key="map_loc_target"
    )
    c3.button(
        "Save",
        key="map_loc_save",
        disabled=row is None,
        on_click=_map_location,
        args=(
            url,
            user,
            row["channel"] if row else "",
            row["external_id"] if row else "",
            None if target == UNMAPPED else target,
        ),
    )


def _listing_section(url: str, user: User) -> None:
    st.subheader("Items")
    only_open = st.toggle("Unmatched only", value=True, key="map_items_open")
    rows = _listings(url, only_open)
    if not rows:
        st.success("Every listed channel item sells an OMS SKU." if only_open else "No item discovered.")
        return
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="listing_mappings_table")
    choices = {
        f"{r['channel']} · {r['article'] or '—'} · {r['name'] or ''} ({r['item_key']})": r for r in rows
    }
    c1, c2, c3 = st.columns([3, 2, 1])
    picked = c1.selectbox("Channel item", list(choices), key="map_item_pick")
    row = choices.get(picked) if picked else None
    sku = c2.text_input("OMS SKU (empty: unmatched)", value=(row or {}).get("sku") or "", key="map_item_sku")
    c3.button(
        "Save",
        key="map_item_save",
        disabled=row is None,
        on_click=_map_listing,
        args=(url, user, row["channel"] if row else "", row["item_key"] if row else "", sku.strip() or None),
    )
    st.caption("Up to 500 items; 'article' is the seller's article as the channel holds it.")
