"""API keys (admins): which other systems may use the OMS's public API, with which scopes, when they last did;
create a key (shown once) and revoke one at once. Reads with the dashboards' login (no secret hashes are
granted to it); creating and revoking are OMS API actions."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards.common import ActionFailed, act, pg, require_database, require_role
from oms_ops.services.api_keys import SCOPES, list_keys

user = require_role("api_keys")
URL = require_database()

st.title("API keys")
st.caption(
    "Keys of other systems (ERP, partner portals, courier apps) for the public API — orders and tracking, "
    "stock, placing orders on their own channel. A key is shown once when it is created and stored hashed."
)

with st.form("api_key_create", clear_on_submit=True):
    a, b = st.columns([2, 3])
    name = a.text_input("Whose system", key="ak_name")
    scopes = b.multiselect("Scopes", list(SCOPES), default=["orders:read"], key="ak_scopes")
    c, d = st.columns([2, 1])
    channel = c.text_input("Channel for orders:write (a channel of its own)", key="ak_channel")
    days = d.number_input("Expires in days (0 = never)", min_value=0, max_value=3650, value=0, key="ak_days")
    create = st.form_submit_button("Create key", type="primary")

if create:
    try:
        made = act(
            "api_keys.create",
            system=name,
            scopes=scopes,
            channel=channel.strip() or None,
            expires_in_days=int(days) or None,
        )
    except ActionFailed as exc:
        st.error(str(exc))
    else:
        st.success(f"Key {made['key_id']} created. Copy it now — it is not shown again:")
        st.code(made["key"], language=None)

show_revoked = st.toggle("Show revoked keys", key="ak_revoked")
keys = pg(list_keys, URL, include_revoked=show_revoked)
if not keys:
    st.info("No API keys yet.")
else:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "key id": k.key_id,
                    "system": k.name,
                    "scopes": ", ".join(k.scopes),
                    "channel": k.channel_code or "",
                    "created": k.created_at,
                    "by": k.created_by,
                    "expires": k.expires_at,
                    "last used": k.last_used_at,
                    "revoked": k.revoked_at,
                }
                for k in keys
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    active = [k.key_id for k in keys if k.revoked_at is None]
    if active:
        with st.form("api_key_revoke"):
            chosen = st.selectbox("Revoke key", active, key="ak_revoke_id")
            if st.form_submit_button("Revoke"):
                try:
                    act("api_keys.revoke", key_id=chosen)
                except ActionFailed as exc:
                    st.error(str(exc))
                else:
                    st.success(f"Key {chosen} revoked: its next request is refused.")
                    st.rerun()
