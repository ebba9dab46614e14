"""E-mail connector: SMTP submission (RFC 5321) with STARTTLS when the server offers it, and AUTH.

Why ``smtplib`` and one connection per message: notifications are a few per order, and a fresh session per
message means a server that dropped an idle connection is never a failure. ``smtp://host:port`` upgrades with
STARTTLS whenever the server offers it (certificate verified); ``smtps://host:465`` speaks TLS from the start.
A server that offers no STARTTLS on a non-loopback address gets no password: AUTH in clear is allowed only on
loopback (the project's SMTP simulator).

Messages are MIME ``multipart/alternative`` (plain text + HTML). The ``Message-ID`` is derived from the outbox
idempotency key by the caller, so the same effect delivered twice carries the same id and a resend (a new key)
a recognisably related one.
"""

from __future__ import annotations

import ipaddress
import smtplib
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from urllib.parse import unquote, urlsplit

from oms_ops.connectors.http import ApiError, ConnectorError

API = "SMTP server"


class MailRefused(ApiError):
    """The server refused the message for good (a recipient refused, the message rejected)."""

    permanent = True


def build_message(
    *,
    sender: str,
    to: str,
    subject: str,
    text: str,
    html: str,
    message_id: str,
    sender_name: str | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    local, _, domain = sender.partition("@")
    msg["From"] = Address(sender_name or "", local, domain) if sender_name else sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class EmailClient:
    api = API

    def __init__(
        self,
        url: str,
        *,
        username: str = "",
        password: str = "",
        sender: str = "",
        timeout: float = 30.0,
        **_kw: object,  # the HTTP clients' options (retry policy …) do not apply to SMTP
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"expected smtp://host:port or smtps://host:port, got {url!r}")
        self.tls = parts.scheme == "smtps"
        self.host = parts.hostname
        self.port = parts.port or (465 if self.tls else 587)
        self.username = username or unquote(parts.username or "")
        self.password = password or unquote(parts.password or "")
        named_host = "." in self.host and not _is_ip(self.host)
        self.sender = sender or (f"noreply@{self.host}" if named_host else "noreply@oms.local")
        self.timeout = timeout

    @classmethod
    def from_endpoint(cls, ep, **kw) -> EmailClient:
        return cls(
            ep.base_url,
            username=ep.get("username"),
            password=ep.get("password"),
            sender=ep.get("sender"),
            **kw,
        )

    def close(self) -> None:  # one connection per message: nothing stays open
        return None

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        if self.tls:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        smtp.ehlo()
        if smtp.has_extn("starttls"):
            smtp.starttls(context=context)
            smtp.ehlo()
        elif self.username and not _loopback(self.host):
            smtp.quit()
            raise ConnectorError(
                API, "STARTTLS", f"{self.host} offers no STARTTLS: the password is not sent in clear"
            )
        return smtp

    def send(self, msg: EmailMessage) -> str:
        """Submit one message; its ``Message-ID``. :class:`MailRefused` when the server refuses it for good,
        :class:`ConnectorError` for what may pass later (connection, AUTH, a temporary 4xx)."""
        call = f"send {msg['Message-ID']}"
        try:
            with self._connect() as smtp:
                if self.username:
                    smtp.login(self.username, self.password)
                smtp.send_message(msg)
        except smtplib.SMTPAuthenticationError as exc:
            raise ConnectorError(API, call, f"AUTH refused ({exc.smtp_code})") from exc
        except smtplib.SMTPRecipientsRefused as exc:
            codes = {r: c for r, (c, _) in exc.recipients.items()}
            if all(400 <= c < 500 for c in codes.values()):
                raise ConnectorError(API, call, f"recipient refused for now: {codes}") from exc
            raise MailRefused(API, call, f"recipient refused: {codes}") from exc
        except smtplib.SMTPResponseException as exc:
            cause = f"{exc.smtp_code} {exc.smtp_error.decode('utf-8', 'replace') if isinstance(exc.smtp_error, bytes) else exc.smtp_error}"
            if 500 <= exc.smtp_code < 600:
                raise MailRefused(API, call, cause) from exc
            raise ConnectorError(API, call, cause) from exc
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            raise ConnectorError(API, call, f"{type(exc).__name__}: {exc}") from exc
        return str(msg["Message-ID"])
