"""CommerceML 2 (``КоммерческаяИнформация`` 2.08 / 2.10): the documents 1C exchanges with "the site".

Why our own reader in front of ``xml.etree``: a file from 1C comes over the network, and the standard
library's parser expands internal entities (a "billion laughs" document of a few kilobytes grows to
gigabytes). CommerceML never needs a document type declaration, so :func:`parse` refuses any ``<!DOCTYPE``
or ``<!ENTITY`` outright, before the parser sees the text, and limits the size and the number of elements.
It also decodes the declared encoding itself — 1C writes UTF-8 or windows-1251 — so that a file whose bytes
do not match its declaration is refused by name instead of being read as mojibake.

Writing (:func:`build`): one ``Документ`` per :class:`Document` with the elements 1C's standard exchange reads —
Ид, Номер, Дата, Время, ХозОперация, Роль, Валюта, Курс, Сумма, Контрагенты, Налоги (VAT included in the
amounts: ``УчтеноВСумме`` true), Товары (each with its VAT rate and amount) and ЗначенияРеквизитов. Amounts
are written with two decimals; VAT is computed per line (``round(sum * rate / (100 + rate), 2)``, half up) and
the document's VAT is the sum of its lines', so the two always agree to the kopeck.

Reading (:func:`read_documents`): every ``Документ`` back as a :class:`Document`, each one's problems listed
separately (one bad document does not spoil the file). The helpers :func:`child`, :func:`children`,
:func:`text` and :func:`requisites` are shared with the purchase-order import of :mod:`oms_ops.supply`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from oms_ops.errors import ValidationFailed

ROOT = "КоммерческаяИнформация"
SCHEMA_VERSION = "2.08"
SCHEMA_VERSIONS = ("2.08", "2.10")
#: ХозОперация of an order (1C: "Заказ покупателя"), a payment and a return
ORDER = "Заказ товара"
PAYMENT = "Выплата безналичных денег"
RETURN = "Возврат товара"
SELLER, BUYER = "Продавец", "Покупатель"
VAT_NAME = "НДС"
#: the default VAT rate in Russia (the goods in the reference catalogue are all at the standard rate)
VAT_RATE = 20
#: the requisites an order document carries (the names 1C's standard exchange maps)
STATUS, PAY_METHOD, PAID, PAID_AT, CANCELLED, TRACKING = (
    "Статус заказа",
    "Метод оплаты",
    "Заказ оплачен",
    "Дата оплаты",
    "Отменен",
    "Номер отслеживания",
)
#: what :func:`parse` accepts at most, by default
MAX_BYTES = 16 * 1024 * 1024
MAX_ELEMENTS = 500_000
ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "windows-1251": "cp1251", "cp1251": "cp1251"}
_DECL = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"'][^>]*\?>")
_DECL_TEXT = re.compile(r"^\s*<\?xml[^>]*\?>")
_CENT = Decimal("0.01")


# -- reading, safely --------------------------------------------------------------------------------------------


def parse(data: bytes | str, *, name: str = "file", max_bytes: int = MAX_BYTES) -> ET.Element:
    """The root ``КоммерческаяИнформация`` of ``data``; :class:`ValidationFailed` naming ``name`` and the problem
    (too large, an encoding other than UTF-8 / windows-1251, bytes not in the declared encoding, a DOCTYPE or
    ENTITY declaration, not well-formed XML, another root element, too many elements)."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise ValidationFailed(f"{name}: {len(raw)} bytes, more than the limit of {max_bytes}")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValidationFailed(f"{name}: UTF-16 is not accepted: CommerceML files are UTF-8 or windows-1251")
    m = _DECL.match(raw[:200])
    declared = m.group(1).decode("ascii").lower() if m else "utf-8"
    codec = ENCODINGS.get(declared)
    if codec is None:
        raise ValidationFailed(f"{name}: encoding {declared!r} is not accepted (UTF-8 or windows-1251)")
    try:
        decoded = raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise ValidationFailed(
            f"{name}: the bytes are not valid {declared} (as declared) at byte {exc.start}"
        ) from None
    upper = decoded.upper()
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        raise ValidationFailed(f"{name}: a DOCTYPE or ENTITY declaration is refused (CommerceML needs none)")
    body = _DECL_TEXT.sub("", decoded, count=1)
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ValidationFailed(f"{name}: not well-formed XML ({exc})") from None
    if local(root.tag) != ROOT:
        raise ValidationFailed(f"{name}: the root element is {local(root.tag)}, not {ROOT}")
    count = sum(1 for _ in root.iter())
    if count > MAX_ELEMENTS:
        raise ValidationFailed(f"{name}: {count} elements, more than the limit of {MAX_ELEMENTS}")
    return root


def local(tag: str) -> str:
    """The element's name without a namespace (``{urn:1C.ru:commerceml_2}Документ`` → ``Документ``)."""
    return tag.rsplit("}", 1)[-1]


def child(el: ET.Element | None, name: str) -> ET.Element | None:
    if el is None:
        return None
    for c in el:
        if local(c.tag) == name:
            return c
    return None


def children(el: ET.Element | None, name: str) -> list[ET.Element]:
    return [] if el is None else [c for c in el if local(c.tag) == name]


def text(el: ET.Element | None, name: str) -> str | None:
    """The stripped text of ``el``'s child ``name`` (None when missing or empty)."""
    c = child(el, name)
    return ((c.text or "").strip() or None) if c is not None else None


def requisites(el: ET.Element) -> dict[str, str]:
    """``ЗначенияРеквизитов/ЗначениеРеквизита`` as {Наименование: Значение}."""
    out = {}
    for p in children(child(el, "ЗначенияРеквизитов"), "ЗначениеРеквизита"):
        key, value = text(p, "Наименование"), text(p, "Значение")
        if key:
            out[key] = value or ""
    return out


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "да", "yes", "истина")


# -- the documents ---------------------------------------------------------------------------------------------


def money(value: Decimal | int | str) -> Decimal:
    return Decimal(value).quantize(_CENT, rounding=ROUND_HALF_UP)


def vat_included(amount: Decimal, rate: int = VAT_RATE) -> Decimal:
    """The VAT inside ``amount`` at ``rate`` percent, to the kopeck (half up)."""
    return money(Decimal(amount) * rate / (100 + rate))


@dataclass(frozen=True)
class Party:
    """A counterparty: the buyer of an order. ``id`` is stable for the same customer without being their
    phone or e-mail (1C needs to tell customers apart, not to reach them)."""

    id: str
    name: str
    role: str = BUYER


@dataclass(frozen=True)
class Item:
    id: str
    article: str
    name: str
    unit_price: Decimal
    qty: Decimal
    amount: Decimal
    vat_rate: int = VAT_RATE
    unit: str = "шт"
    kind: str = "Товар"  # ВидНоменклатуры; "Услуга" for delivery

    @property
    def vat(self) -> Decimal:
        return vat_included(self.amount, self.vat_rate)


@dataclass(frozen=True)
class Document:
    id: str
    number: str
    at: datetime
    operation: str
    amount: Decimal
    items: tuple[Item, ...] = ()
    parties: tuple[Party, ...] = ()
    requisites: Mapping[str, str] = field(default_factory=dict)
    role: str = SELLER
    currency: str = "RUB"
    rate: Decimal = Decimal(1)
    comment: str | None = None
    #: when read: the VAT the document states (built documents compute it from the lines)
    stated_vat: Decimal | None = None

    @property
    def vat(self) -> Decimal:
        if self.stated_vat is not None:
            return self.stated_vat
        if self.items:
            return sum((i.vat for i in self.items), Decimal(0))
        return vat_included(self.amount)


def _num(value: Decimal | int) -> str:
    """A quantity or a rate: whole numbers without decimals (``2``), others as they are (``1.5``)."""
    d = Decimal(value)
    return str(int(d)) if d == d.to_integral_value() else format(d.normalize(), "f")


def _sub(parent: ET.Element, name: str, value: str | None = None) -> ET.Element:
    el = ET.SubElement(parent, name)
    if value is not None:
        el.text = value
    return el


def _tax(parent: ET.Element, amount: Decimal, rate: int | None = None) -> None:
    taxes = _sub(parent, "Налоги")
    tax = _sub(taxes, "Налог")
    _sub(tax, "Наименование", VAT_NAME)
    _sub(tax, "УчтеноВСумме", "true")
    _sub(tax, "Сумма", f"{money(amount)}")
    if rate is not None:
        _sub(tax, "Ставка", str(rate))


def _document(root: ET.Element, doc: Document) -> None:
    el = _sub(root, "Документ")
    _sub(el, "Ид", doc.id)
    _sub(el, "Номер", doc.number)
    _sub(el, "Дата", doc.at.date().isoformat())
    _sub(el, "Время", doc.at.time().replace(microsecond=0).isoformat())
    _sub(el, "ХозОперация", doc.operation)
    _sub(el, "Роль", doc.role)
    _sub(el, "Валюта", doc.currency)
    _sub(el, "Курс", _num(doc.rate))
    _sub(el, "Сумма", f"{money(doc.amount)}")
    if doc.parties:
        parties = _sub(el, "Контрагенты")
        for p in doc.parties:
            cp = _sub(parties, "Контрагент")
            _sub(cp, "Ид", p.id)
            _sub(cp, "Наименование", p.name)
            _sub(cp, "Роль", p.role)
            _sub(cp, "ПолноеНаименование", p.name)
    if doc.comment:
        _sub(el, "Комментарий", doc.comment)
    _tax(el, doc.vat)
    if doc.items:
        goods = _sub(el, "Товары")
        for i in doc.items:
            g = _sub(goods, "Товар")
            _sub(g, "Ид", i.id)
            _sub(g, "Артикул", i.article)
            _sub(g, "Наименование", i.name)
            unit = _sub(g, "БазоваяЕдиница", i.unit)
            unit.set("Код", "796")
            unit.set("НаименованиеПолное", "Штука")
            unit.set("МеждународноеСокращение", "PCE")
            _sub(g, "ЦенаЗаЕдиницу", f"{money(i.unit_price)}")
            _sub(g, "Количество", _num(i.qty))
            _sub(g, "Сумма", f"{money(i.amount)}")
            rates = _sub(g, "СтавкиНалогов")
            r = _sub(rates, "СтавкаНалога")
            _sub(r, "Наименование", VAT_NAME)
            _sub(r, "Ставка", str(i.vat_rate))
            _tax(g, i.vat, i.vat_rate)
            props = _sub(g, "ЗначенияРеквизитов")
            for key, value in (("ВидНоменклатуры", i.kind), ("ТипНоменклатуры", i.kind)):
                p = _sub(props, "ЗначениеРеквизита")
                _sub(p, "Наименование", key)
                _sub(p, "Значение", value)
    if doc.requisites:
        props = _sub(el, "ЗначенияРеквизитов")
        for key, value in doc.requisites.items():
            p = _sub(props, "ЗначениеРеквизита")
            _sub(p, "Наименование", key)
            _sub(p, "Значение", value)


def build(documents: Sequence[Document], *, generated_at: datetime, version: str = SCHEMA_VERSION) -> bytes:
    """A ``КоммерческаяИнформация`` with ``documents``, UTF-8 with its declaration."""
    if version not in SCHEMA_VERSIONS:
        raise ValueError(f"version: {version!r}, expected one of {', '.join(SCHEMA_VERSIONS)}")
    root = ET.Element(ROOT)
    root.set("ВерсияСхемы", version)
    root.set("ДатаФормирования", generated_at.replace(microsecond=0, tzinfo=None).isoformat())
    for doc in documents:
        _document(root, doc)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(
        root, encoding="utf-8", xml_declaration=False
    )


# -- reading documents ------------------------------------------------------------------------------------------


@dataclass
class ReadDocument:
    """One ``Документ`` as read: the document when it is complete enough, else the problems (``position`` is
    its place in the file, for messages)."""

    position: int
    id: str | None
    document: Document | None
    problems: list[str]
    raw: dict[str, object]


def _decimal(value: str | None, what: str, problems: list[str]) -> Decimal | None:
    if value is None:
        problems.append(f"no {what}")
        return None
    try:
        d = Decimal(value.replace(",", ".").replace("\xa0", "").replace(" ", ""))
    except InvalidOperation:
        problems.append(f"{what} is not a number: {value[:40]!r}")
        return None
    if not d.is_finite():
        problems.append(f"{what} is not a number: {value[:40]!r}")
        return None
    return d


def parse_datetime(day: str | None, at: str | None) -> datetime | None:
    """``Дата`` (+ ``Время``) as a naive datetime; None when not a date (1C writes ``2025-11-26`` and
    ``12:30:00``, sometimes ``2025-11-26T12:30:00`` in one field)."""
    if not day:
        return None
    try:
        if "T" in day or " " in day.strip():
            return datetime.fromisoformat(day.strip().replace(" ", "T"))
        d = date.fromisoformat(day.strip()[:10])
        t = time.fromisoformat(at.strip()) if at else time(0)
        return datetime.combine(d, t)
    except ValueError:
        return None


def read_documents(root: ET.Element, *, name: str = "file") -> list[ReadDocument]:
    """Every ``Документ`` of a parsed file, each with its own problems."""
    out = []
    for n, el in enumerate(children(root, "Документ"), start=1):
        problems: list[str] = []
        doc_id = text(el, "Ид") or text(el, "Номер")
        props = requisites(el)
        raw: dict[str, object] = {
            "file": name,
            "position": n,
            "Ид": text(el, "Ид"),
            "Номер": text(el, "Номер"),
            "ХозОперация": text(el, "ХозОперация"),
            "Сумма": text(el, "Сумма"),
            "ЗначенияРеквизитов": props,
        }
        if not doc_id:
            problems.append("no Ид or Номер")
        at = parse_datetime(text(el, "Дата"), text(el, "Время"))
        if at is None:
            problems.append(f"Дата is not a date: {text(el, 'Дата')!r}")
        amount = _decimal(text(el, "Сумма"), "Сумма", problems)
        operation = text(el, "ХозОперация")
        if not operation:
            problems.append("no ХозОперация")
        items = []
        for k, g in enumerate(children(child(el, "Товары"), "Товар"), start=1):
            gp: list[str] = []
            price = _decimal(text(g, "ЦенаЗаЕдиницу"), "ЦенаЗаЕдиницу", gp)
            qty = _decimal(text(g, "Количество"), "Количество", gp)
            total = _decimal(text(g, "Сумма"), "Сумма", gp)
            rate_el = child(child(g, "СтавкиНалогов"), "СтавкаНалога")
            rate_text = text(rate_el, "Ставка") if rate_el is not None else None
            rate = int(rate_text) if rate_text and rate_text.isdigit() else VAT_RATE
            article = text(g, "Артикул") or text(g, "Ид")
            if not article:
                gp.append("no Артикул or Ид")
            if gp:
                problems.extend(f"Товар[{k}]: {p}" for p in gp)
                continue
            kinds = requisites(g)
            items.append(
                Item(
                    id=text(g, "Ид") or article or "",
                    article=article or "",
                    name=text(g, "Наименование") or "",
                    unit_price=price,  # type: ignore[arg-type]
                    qty=qty,  # type: ignore[arg-type]
                    amount=total,  # type: ignore[arg-type]
                    vat_rate=rate,
                    unit=text(g, "БазоваяЕдиница") or "шт",
                    kind=kinds.get("ВидНоменклатуры", "Товар"),
                )
            )
        parties = tuple(
            Party(
                id=text(cp, "Ид") or "", name=text(cp, "Наименование") or "", role=text(cp, "Роль") or BUYER
            )
            for cp in children(child(el, "Контрагенты"), "Контрагент")
        )
        stated_vat = None
        for tax in children(child(el, "Налоги"), "Налог"):
            if text(tax, "Наименование") == VAT_NAME:
                stated_vat = _decimal(text(tax, "Сумма"), "Налог/Сумма", problems)
        document = None
        if not problems:
            document = Document(
                id=doc_id or "",
                number=text(el, "Номер") or doc_id or "",
                at=at,  # type: ignore[arg-type]
                operation=operation or "",
                amount=amount,  # type: ignore[arg-type]
                items=tuple(items),
                parties=parties,
                requisites=props,
                role=text(el, "Роль") or SELLER,
                currency=text(el, "Валюта") or "RUB",
                rate=_decimal(text(el, "Курс") or "1", "Курс", []) or Decimal(1),
                comment=text(el, "Комментарий"),
                stated_vat=stated_vat,
            )
        out.append(ReadDocument(n, doc_id, document, problems, raw))
    return out
