"""1C:Enterprise (УТ / КА / Бухгалтерия) doing its standard "exchange with the site" against the OMS.

Unlike the other simulators this one is a client: real 1C polls the site, so on its clock (every
``poll_interval_s`` simulated seconds) it runs the exchange exactly as 1C's exchange module does —

1. ``GET <url>?type=sale&mode=checkauth`` with HTTP Basic → ``success\\n<cookie name>\\n<cookie value>``;
2. ``GET …&mode=init`` with the cookie → ``zip=no\\nfile_limit=<bytes>``;
3. ``GET …&mode=query`` → the ``КоммерческаяИнформация`` with the changed orders, payments and returns; it keeps
   every document it received (by Ид, the latest version; persisted under ``state_dir``);
4. ``GET …&mode=success`` — the confirmation (a crash between 3 and 4 leaves the batch unconfirmed: the site
   must send it again);
5. now and then (``change_share`` of the sessions) the accountant changes an order in 1C — marks it paid or
   cancels it — and 1C sends it back: ``POST …&mode=file&filename=orders-<n>.xml`` (in parts of at most
   ``file_limit`` bytes) then ``GET …&mode=import&filename=…``.

It reads and writes CommerceML with its own few lines of ``xml.etree`` (it imports nothing of the OMS), so it
also checks that what the OMS writes is readable by another implementation.

Configuration: ``exchange_url`` (the OMS's ``…/1c_exchange``), ``login``, ``password`` or ``password_file`` (read
at each session: the OMS generates it at its first start). Without a URL, or while the password file does not
exist yet, it waits. Faults (``/_sim/faults``, method ``ONEC``, paths ``1c:query``, ``1c:success``,
``1c:import``): ``server_error``/``timeout`` on ``1c:success`` = 1C dies before confirming; ``malformed`` on
``1c:import`` = a corrupted file is sent; ``duplicate`` on ``1c:import`` = the same file is imported twice.
Tests drive it directly: :meth:`run_session` and :meth:`send_changes`.
"""

from __future__ import annotations

import logging
import random
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import httpx

from simulators.base import SimContext, Simulator, dt_in, dt_out

log = logging.getLogger("simulators.onec")

#: how many received documents are kept (the latest version of each)
MAX_DOCUMENTS = 5000


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(el: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in el if _local(c.tag) == name), None)


def _text(el: ET.Element, name: str) -> str:
    c = _find(el, name)
    return (c.text or "").strip() if c is not None else ""


def _requisites(el: ET.Element) -> dict[str, str]:
    props = _find(el, "ЗначенияРеквизитов")
    if props is None:
        return {}
    return {
        _text(p, "Наименование"): _text(p, "Значение") for p in props if _local(p.tag) == "ЗначениеРеквизита"
    }


def _set_requisite(el: ET.Element, name: str, value: str) -> None:
    props = _find(el, "ЗначенияРеквизитов")
    if props is None:
        props = ET.SubElement(el, "ЗначенияРеквизитов")
    for p in props:
        if _text(p, "Наименование") == name:
            v = _find(p, "Значение")
            if v is None:
                v = ET.SubElement(p, "Значение")
            v.text = value
            return
    p = ET.SubElement(props, "ЗначениеРеквизита")
    ET.SubElement(p, "Наименование").text = name
    ET.SubElement(p, "Значение").text = value


class OnecSimulator(Simulator):
    name: ClassVar[str] = "onec"

    def __init__(
        self,
        ctx: SimContext,
        *,
        faults=(),
        exchange_url: str | None = None,
        login: str = "1c",
        password: str | None = None,
        password_file: str | Path | None = None,
        poll_interval_s: float = 120.0,
        change_share: float = 0.3,
        pay_share: float = 0.7,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(ctx, faults=faults)
        self.exchange_url = exchange_url
        self.login = login
        self.password = password
        self.password_file = Path(password_file) if password_file else None
        self.poll_interval_s = poll_interval_s
        self.change_share = change_share
        self.pay_share = pay_share
        self.timeout = timeout
        self.rng = random.Random(f"{ctx.seed}:onec")
        #: Ид → {"operation", "number", "amount", "requisites", "xml", "received_at"}
        self.documents: dict[str, dict[str, Any]] = {}
        self.sessions = 0
        self.confirmed = 0
        self.unconfirmed = 0
        self.files_sent = 0
        #: what 1C sent back and what the site answered
        self.changes: list[dict[str, Any]] = []
        self.last_answers: list[str] = []
        self.last_error: str | None = None
        self.next_poll: datetime | None = None
        self._busy = False

    # -- the simulated world -------------------------------------------------------------------------------
    def credentials(self) -> dict:
        return {"login": self.login}

    def state(self) -> dict:
        return {
            "exchange_url": self.exchange_url,
            "sessions": self.sessions,
            "confirmed": self.confirmed,
            "unconfirmed": self.unconfirmed,
            "documents": len(self.documents),
            "files_sent": self.files_sent,
            "changes": self.changes[-20:],
            "last_error": self.last_error,
            "next_poll": dt_out(self.next_poll),
        }

    def dump_state(self) -> dict | None:
        docs = dict(list(self.documents.items())[-MAX_DOCUMENTS:])
        return {
            "documents": docs,
            "sessions": self.sessions,
            "confirmed": self.confirmed,
            "unconfirmed": self.unconfirmed,
            "files_sent": self.files_sent,
            "changes": self.changes[-200:],
            "next_poll": dt_out(self.next_poll),
        }

    def load_state(self, data: dict, *, clean: bool) -> None:
        self.documents = dict(data.get("documents", {}))
        self.sessions = int(data.get("sessions", 0))
        self.confirmed = int(data.get("confirmed", 0))
        self.unconfirmed = int(data.get("unconfirmed", 0))
        self.files_sent = int(data.get("files_sent", 0))
        self.changes = list(data.get("changes", []))
        self.next_poll = dt_in(data.get("next_poll"))

    def tick(self) -> None:
        with self.lock:
            now = self.now
            due = self.exchange_url and not self._busy and (self.next_poll is None or now >= self.next_poll)
            if not due:
                return
            self._busy = True
            self.next_poll = now + timedelta(seconds=self.poll_interval_s)
        try:
            if self._password() is not None:
                self.run_session(send_changes=True)
        except Exception as exc:  # noqa: BLE001 - an unreachable site is 1C's everyday life: try next time
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("1c exchange failed: %s", self.last_error)
        finally:
            self._busy = False

    # -- the protocol -------------------------------------------------------------------------------------
    def _password(self) -> str | None:
        if self.password:
            return self.password
        if self.password_file and self.password_file.exists():
            return self.password_file.read_text(encoding="utf-8").strip() or None
        return None

    def _call(
        self, client: httpx.Client, mode: str, *, kind: str = "sale", method: str = "GET", **extra
    ) -> httpx.Response:
        params = {"type": kind, "mode": mode, **{k: v for k, v in extra.items() if k != "content"}}
        r = client.request(method, self.exchange_url, params=params, content=extra.get("content"))
        self.stats[f"{method} {kind}:{mode}"] += 1
        return r

    @staticmethod
    def _lines(r: httpx.Response) -> list[str]:
        return r.text.replace("\r\n", "\n").split("\n")

    def sign_in(self, client: httpx.Client, *, kind: str = "sale") -> int:
        """checkauth + init: sets the session cookie on ``client``; the site's file_limit."""
        password = self._password()
        if password is None:
            raise RuntimeError("no password configured for the 1C exchange")
        r = client.get(
            self.exchange_url, params={"type": kind, "mode": "checkauth"}, auth=(self.login, password)
        )
        lines = self._lines(r)
        if r.status_code != 200 or lines[0] != "success" or len(lines) < 3:
            raise RuntimeError(f"checkauth refused: {r.status_code} {r.text[:200]!r}")
        client.cookies.set(lines[1], lines[2])
        r = self._call(client, "init", kind=kind)
        limit = 1_000_000
        for line in self._lines(r):
            if line.startswith("file_limit="):
                limit = int(line.split("=", 1)[1])
        return limit

    def run_session(self, *, send_changes: bool = False, confirm: bool | None = None) -> dict[str, Any]:
        """One exchange: sign in, take the orders, confirm them (unless a fault or ``confirm=False`` says 1C
        died first), and maybe send changed orders back. Returns what happened."""
        out: dict[str, Any] = {"received": 0, "confirmed": False}
        with httpx.Client(timeout=self.timeout) as client:
            limit = self.sign_in(client)
            r = self._call(client, "query")
            if r.status_code != 200 or r.text.startswith("failure"):
                raise RuntimeError(f"query refused: {r.status_code} {r.text[:200]!r}")
            received = self._take(r.content)
            out["received"] = len(received)
            out["documents"] = received
            fs = self.faults.draw("ONEC", "1c:success")
            dies = fs.get("server_error") or fs.get("timeout")
            if confirm is None:
                confirm = not dies
            with self.lock:
                self.sessions += 1
                self.dirty = True
            if confirm:
                r = self._call(client, "success")
                out["confirmed"] = self._lines(r)[0] == "success"
                with self.lock:
                    self.confirmed += 1
            else:
                with self.lock:
                    self.unconfirmed += 1
            if send_changes and self.rng.random() < self.change_share:
                candidates = [
                    (doc_id, d)
                    for doc_id, d in self.documents.items()
                    if d["operation"] == "Заказ товара"
                    and d["requisites"].get("Отменен") != "true"
                    and d["requisites"].get("Заказ оплачен") != "true"
                ]
                if candidates:
                    doc_id, _ = self.rng.choice(candidates[-50:])
                    change = "paid" if self.rng.random() < self.pay_share else "cancelled"
                    out["sent"] = self._send(client, limit, [(doc_id, change)])
        self.last_error = None
        return out

    def send_changes(self, changes: list[tuple[str, str]], *, raw: bytes | None = None) -> dict[str, Any]:
        """Send changed orders back as 1C does: ``changes`` = (order number, "paid" | "cancelled"), built from
        the documents received; ``raw`` sends those bytes instead (hostile-input tests)."""
        with httpx.Client(timeout=self.timeout) as client:
            limit = self.sign_in(client)
            return self._send(client, limit, changes, raw=raw)

    def _take(self, content: bytes) -> list[str]:
        root = ET.fromstring(content)
        if _local(root.tag) != "КоммерческаяИнформация":
            raise RuntimeError(f"query answered {root.tag}, not КоммерческаяИнформация")
        got = []
        with self.lock:
            for el in root:
                if _local(el.tag) != "Документ":
                    continue
                doc_id = _text(el, "Ид")
                self.documents.pop(doc_id, None)  # the latest version goes to the end
                self.documents[doc_id] = {
                    "operation": _text(el, "ХозОперация"),
                    "number": _text(el, "Номер"),
                    "amount": _text(el, "Сумма"),
                    "requisites": _requisites(el),
                    "xml": ET.tostring(el, encoding="unicode"),
                    "received_at": dt_out(self.now),
                }
                got.append(doc_id)
            while len(self.documents) > MAX_DOCUMENTS:
                self.documents.pop(next(iter(self.documents)))
            self.dirty = True
        return got

    def changed_file(self, changes: list[tuple[str, str]]) -> bytes:
        """The КоммерческаяИнформация 1C sends back: the received documents with the accountant's changes."""
        root = ET.Element(
            "КоммерческаяИнформация",
            {
                "ВерсияСхемы": "2.08",
                "ДатаФормирования": self.now.replace(tzinfo=None, microsecond=0).isoformat(),
            },
        )
        for doc_id, change in changes:
            el = ET.fromstring(self.documents[doc_id]["xml"])
            if change == "paid":
                _set_requisite(el, "Заказ оплачен", "true")
                _set_requisite(el, "Дата оплаты", self.now.replace(tzinfo=None, microsecond=0).isoformat())
                _set_requisite(el, "Метод оплаты", "Безналичный расчет (1С)")
            elif change == "cancelled":
                _set_requisite(el, "Отменен", "true")
            else:
                raise ValueError(f"change: {change!r}, expected paid or cancelled")
            root.append(el)
        return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")

    def _send(
        self, client: httpx.Client, limit: int, changes: list[tuple[str, str]], *, raw: bytes | None = None
    ) -> dict[str, Any]:
        with self.lock:
            self.files_sent += 1
            filename = f"orders-{self.generation}-{self.files_sent}.xml"
        body = raw if raw is not None else self.changed_file(changes)
        fs = self.faults.draw("ONEC", "1c:import")
        if fs.get("malformed"):
            body = body[: max(1, len(body) // 2)]
        answers = []
        for i in range(0, max(len(body), 1), limit):
            r = self._call(client, "file", method="POST", filename=filename, content=body[i : i + limit])
            answers.append(r.text)
            if not r.text.startswith("success"):
                break
        else:
            r = self._call(client, "import", filename=filename)
            answers.append(r.text)
            if fs.get("duplicate"):
                self._call(client, "file", method="POST", filename=filename, content=body)
                answers.append(self._call(client, "import", filename=filename).text)
        record = {"filename": filename, "changes": changes, "answers": answers, "at": dt_out(self.now)}
        with self.lock:
            self.changes.append(record)
            self.last_answers = answers
            self.dirty = True
        return record
