"""Mail server simulator: an SMTP server on loopback (AUTH required) and an HTTP view of its mailbox.

Why a real SMTP server (``aiosmtpd``) rather than a stub: the OMS's e-mail connector (``oms_ops/connectors/
email.py``) uses ``smtplib`` exactly as against a provider's submission server — EHLO, AUTH, MAIL/RCPT/DATA —
so a wrong password, a missing login or a malformed message fails here as it would there.

* SMTP (RFC 5321) on ``127.0.0.1:<smtp_port>`` (a free port unless given). ``AUTH PLAIN``/``LOGIN`` with
  ``username``/``password`` is required before ``MAIL`` (``530``); a wrong password is refused with ``535``.
  The server does not offer STARTTLS: it listens on loopback only, where no one else can read the wire (a real
  provider offers STARTTLS and the connector uses it whenever offered). Every accepted message is parsed
  (``Message-ID``, subject, text and HTML parts) and kept, with the simulated time it arrived.
* HTTP (the simulator's base URL, control paths only): ``GET /_sim/mailbox[?to=ADDR&message_id=ID]`` →
  ``{"messages": [{id, mail_from, rcpt_tos, message_id, subject, from, to, text, html, received_at,
  duplicate_of}]}``; ``DELETE /_sim/mailbox`` empties it. ``duplicate_of`` names the first message with the
  same ``Message-ID``: a resend is recognisable.

In the manifest the system's ``base_url`` is ``smtp://127.0.0.1:<port>`` (what the OMS connects to) and
``control_url`` the HTTP view. The mailbox is kept across restarts like the other simulators' state (the
latest ``keep`` messages).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import socket
import threading
import warnings
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.base import SimContext, Simulator, dt_out

log = logging.getLogger("simulators.smtp")
# AUTH without TLS is the simulator's choice on loopback (module docstring): aiosmtpd's warning about it, repeated
# for every connection, says nothing new
warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
logging.getLogger("mail.log").setLevel(logging.ERROR)


def parse_message(raw: bytes) -> dict[str, Any]:
    """The parts of a message the OMS's tests look at: headers, the text and the HTML body."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    text = html = None
    for part in msg.walk() if msg.is_multipart() else [msg]:
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        kind = part.get_content_type()
        if kind == "text/plain" and text is None:
            text = part.get_content()
        elif kind == "text/html" and html is None:
            html = part.get_content()
    return {
        "message_id": (msg.get("Message-ID") or "").strip() or None,
        "subject": str(msg.get("Subject") or ""),
        "from": str(msg.get("From") or ""),
        "to": str(msg.get("To") or ""),
        "text": text,
        "html": html,
    }


class _Handler:
    def __init__(self, sim: SmtpSimulator) -> None:
        self.sim = sim

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        try:
            parsed = parse_message(envelope.original_content or envelope.content)
        except Exception as exc:  # noqa: BLE001 - a message we cannot parse is refused, not lost silently
            return f"554 5.6.0 message cannot be parsed: {exc}"
        self.sim.store(envelope.mail_from, list(envelope.rcpt_tos), parsed)
        return "250 2.0.0 Message accepted for delivery"


class SmtpSimulator(Simulator):
    """SMTP server with AUTH + mailbox: see the module docstring."""

    name = "smtp"

    def __init__(
        self,
        ctx: SimContext,
        *,
        username: str = "oms",
        password: str = "sim-smtp-password",
        smtp_port: int = 0,
        keep: int = 5000,
        faults=(),
    ) -> None:
        super().__init__(ctx, faults=faults)
        self.username = username
        self.password = password
        self.smtp_port = smtp_port
        self.keep = keep
        self.messages: list[dict[str, Any]] = []
        self._counter = 0
        self.auth_failures = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._host = "127.0.0.1"

    def credentials(self) -> dict:
        return {"username": self.username, "password": self.password}

    def manifest_entry(self, http_url: str) -> dict:
        """What the manifest says of this system: the SMTP address as ``base_url`` (``control_url`` stays
        the HTTP view of the mailbox)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return {"base_url": f"smtp://{host}:{self.smtp_port}", "mailbox_url": f"{http_url}/_sim/mailbox"}

    # -- state across restarts ------------------------------------------------------------------------------
    def dump_state(self) -> dict:
        return {"counter": self._counter, "messages": self.messages[-self.keep :]}

    def load_state(self, data: dict, *, clean: bool) -> None:
        self._counter = int(data["counter"])
        self.messages = list(data["messages"])

    # -- the mailbox ----------------------------------------------------------------------------------------
    def store(self, mail_from: str, rcpt_tos: list[str], parsed: dict[str, Any]) -> None:
        with self.lock:
            self._counter += 1
            first = next(
                (
                    m["id"]
                    for m in self.messages
                    if parsed["message_id"] and m["message_id"] == parsed["message_id"]
                ),
                None,
            )
            self.messages.append(
                {
                    "id": self._counter,
                    "mail_from": mail_from,
                    "rcpt_tos": rcpt_tos,
                    **parsed,
                    "received_at": dt_out(self.now),
                    "duplicate_of": first,
                }
            )
            del self.messages[: -self.keep]
            self.dirty = True

    def _authenticate(self, server, session, envelope, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
            password = auth_data.password.decode("utf-8", "replace")
            if login == self.username and password == self.password:
                return AuthResult(success=True)
        self.auth_failures += 1
        return AuthResult(success=False, handled=False)

    # -- the SMTP listener (started and stopped by the stack next to the HTTP server) -------------------------
    def serve_extra(self, host: str) -> None:
        """Start the SMTP listener on ``host`` in its own thread and event loop."""
        self._host = host
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, self.smtp_port))
        sock.listen(64)
        self.smtp_port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        handler = _Handler(self)
        started = threading.Event()

        def factory() -> SMTP:
            with warnings.catch_warnings():  # AUTH without TLS on loopback: see the module docstring
                warnings.simplefilter("ignore")
                return SMTP(
                    handler,
                    hostname="smtp.sim.local",
                    auth_required=True,
                    auth_require_tls=False,
                    authenticator=self._authenticate,
                    enable_SMTPUTF8=True,
                    loop=loop,
                )

        def run() -> None:
            asyncio.set_event_loop(loop)
            server = loop.run_until_complete(loop.create_server(factory, sock=sock))
            started.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                loop.run_until_complete(server.wait_closed())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="sim-smtp", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError(f"SMTP simulator did not start on {host}:{self.smtp_port}")

    def stop_extra(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop = self._thread = None

    # -- control --------------------------------------------------------------------------------------------
    def control_routes(self) -> list[Route]:
        async def mailbox(request: Request) -> Response:
            if request.method == "DELETE":
                with self.lock:
                    self.messages.clear()
                    self.dirty = True
                return JSONResponse({"messages": []})
            to = request.query_params.get("to")
            mid = request.query_params.get("message_id")
            with self.lock:
                rows = [
                    m
                    for m in self.messages
                    if (to is None or to in m["rcpt_tos"]) and (mid is None or m["message_id"] == mid)
                ]
            return JSONResponse({"messages": rows})

        return [Route("/_sim/mailbox", mailbox, methods=["GET", "DELETE"])]

    def state(self) -> dict:
        return {
            "messages": len(self.messages),
            "smtp": f"{self._host}:{self.smtp_port}",
            "auth_failures": self.auth_failures,
        }
