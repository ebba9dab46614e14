"""The mail server simulator: a real SMTP server on loopback (aiosmtpd) that requires AUTH — a wrong password
or no login is refused — keeps every message with its Message-ID, subject, text and HTML parts, marks a
resent Message-ID as a duplicate, and keeps its mailbox across a restart."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import pytest


def _message(mid: str = "<n.1@oms.local>", to: str = "buyer@example.ru") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "shop@oms.local"
    msg["To"] = to
    msg["Subject"] = "Заказ ORD-00000001 отправлен"
    msg["Message-ID"] = mid
    msg.set_content("Ваш заказ отправлен.")
    msg.add_alternative("<p>Ваш заказ отправлен.</p>", subtype="html")
    return msg


def _smtp(stack) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", stack["smtp"].smtp_port, timeout=10)


def test_the_manifest_names_the_smtp_address_and_the_mailbox(make_stack):
    stack = make_stack(only=["smtp"])
    entry = stack.manifest()["simulators"]["smtp"]
    assert entry["base_url"] == f"smtp://127.0.0.1:{stack['smtp'].smtp_port}"
    assert entry["mailbox_url"] == stack.urls["smtp"] + "/_sim/mailbox"
    assert set(entry["credentials"]) == {"username", "password"}


def test_auth_is_required_and_a_wrong_password_refused(make_stack, client):
    stack = make_stack(only=["smtp"], options={"smtp": {"password": "right"}})
    with _smtp(stack) as s:
        s.ehlo()
        assert s.has_extn("auth")
        with pytest.raises(smtplib.SMTPSenderRefused) as no_login:
            s.send_message(_message())
        assert no_login.value.smtp_code == 530
        with pytest.raises(smtplib.SMTPAuthenticationError) as wrong:
            s.login("oms", "wrong")
        assert wrong.value.smtp_code == 535
    assert client.get(stack.urls["smtp"] + "/_sim/mailbox").json()["messages"] == []
    assert (
        client.get(stack.urls["smtp"] + "/_sim/state").json()["auth_failures"] >= 1
    )  # one per mechanism tried


def test_a_message_is_kept_with_its_parts_and_a_resend_is_marked(make_stack, client):
    stack = make_stack(only=["smtp"])
    with _smtp(stack) as s:
        s.login("oms", "sim-smtp-password")
        s.send_message(_message())
        s.send_message(_message())  # the same Message-ID again
    first, second = client.get(
        stack.urls["smtp"] + "/_sim/mailbox", params={"to": "buyer@example.ru"}
    ).json()["messages"]
    assert first["message_id"] == "<n.1@oms.local>" and first["subject"] == "Заказ ORD-00000001 отправлен"
    assert (
        first["text"].strip() == "Ваш заказ отправлен."
        and first["html"].strip() == "<p>Ваш заказ отправлен.</p>"
    )
    assert first["rcpt_tos"] == ["buyer@example.ru"] and first["duplicate_of"] is None
    assert second["duplicate_of"] == first["id"]
    client.delete(stack.urls["smtp"] + "/_sim/mailbox")
    assert client.get(stack.urls["smtp"] + "/_sim/mailbox").json()["messages"] == []


def test_the_mailbox_survives_a_restart(make_stack, client):
    first = make_stack(only=["smtp"], persist=True)
    with _smtp(first) as s:
        s.login("oms", "sim-smtp-password")
        s.send_message(_message("<kept@oms.local>"))
    first.stop()
    second = make_stack(only=["smtp"], persist=True)
    kept = client.get(second.urls["smtp"] + "/_sim/mailbox", params={"message_id": "<kept@oms.local>"}).json()
    assert len(kept["messages"]) == 1
