"""Customer notifications panel of the lookup page: what the customer of this order was told, by SMS and
e-mail, and how it went (queued until the quiet hours end, sent, delivered, failed with the gateway's words,
suppressed with the reason — an invalid phone, an opt-out). Read from ``oms.notifications`` (the dashboards'
login has SELECT on it, migration 0021) through ``oms_ops.services.notifications.list_notifications``.

Recipients are personal data: roles that see customer data masked (``User.masked_pii``) get the phone and
e-mail masked and the message text hidden (an e-mail greets the customer by name). Ops and admins can resend
a sent, delivered or failed notification: the OMS API's ``notifications.resend`` action (a new outbox effect;
the worker sends it)."""

from __future__ import annotations

import streamlit as st

from dashboards.common import READ_TTL_S, act, fmt_ts, pg, run_action, show_flash
from dashboards.masking import MASK, mask_email, mask_phone
from oms_ops.services import notifications as nt

FLASH = "flash_notifications"


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _notifications(url: str, order_id: int) -> list[dict]:
    return pg(nt.list_notifications, url, order_id=order_id)


def rows_for(notifications: list[dict], *, masked: bool) -> list[dict]:
    """The panel's table rows (pure: tested without Streamlit)."""
    out = []
    for n in notifications:
        recipient = n["recipient"]
        if masked:
            recipient = mask_phone(recipient) if n["channel"] == "sms" else mask_email(recipient)
        out.append(
            {
                "id": n["notification_id"],
                "event": n["trigger"],
                "channel": n["channel"],
                "recipient": recipient,
                "status": n["status"],
                "why": n["reason"],
                "gateway id": n["provider_id"],
                "gateway status": n["provider_status"],
                "attempts": n["attempts"],
                "text": MASK if masked else (n["subject"] + ": " if n["subject"] else "") + n["body"],
                "created": fmt_ts(n["created_at"]),
                "sent": fmt_ts(n["sent_at"]),
                "delivered": fmt_ts(n["delivered_at"]),
            }
        )
    return out


def _resend(notification_id: int) -> None:
    def do() -> str:
        res = act("notifications.resend", notification_id=notification_id)
        return f"Notification {notification_id} queued again ({res['outbox_key']}); the worker sends it."

    run_action(FLASH, do)


def render_notifications(url: str, order_id: int, *, masked: bool, can_act: bool) -> None:
    st.subheader("Customer notifications")
    show_flash(FLASH)
    found = _notifications(url, order_id)
    if not found:
        st.caption(
            "Nothing told to the customer yet (marketplace orders are notified by the marketplace itself)."
        )
        return
    st.dataframe(rows_for(found, masked=masked), hide_index=True, width="stretch", key="notifications_table")
    if not can_act:
        return
    resendable = [n for n in found if n["status"] in nt.RESENDABLE]
    if resendable:
        c1, c2 = st.columns([3, 1])
        chosen = c1.selectbox(
            "Resend",
            [n["notification_id"] for n in resendable],
            format_func=lambda i: next(
                f"#{n['notification_id']} {n['trigger']} by {n['channel']} ({n['status']})"
                for n in resendable
                if n["notification_id"] == i
            ),
            key="notification_resend_choice",
        )
        c2.button(
            "Resend", key="notification_resend", on_click=_resend, args=(chosen,), icon=":material/send:"
        )
