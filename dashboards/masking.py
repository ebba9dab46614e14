"""Masking of customer personal data (names, phones, e-mails, addresses, coordinates) for roles that must
not see it (``User.masked_pii``: managers). Every page shows customer data only through this module.

    mask_name("Иван Петров")          -> "И*** П***"
    mask_phone("+7 915 123-45-12")    -> "+7 *** ***-**-12"
    mask_email("ivan.petrov@mail.ru") -> "i***@mail.ru"
    mask_address("ул. Тверская, 1")   -> "***"
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

MASK = "***"


def mask_name(value: str | None) -> str | None:
    """Keep the first letter of each word: "Иван Петров" → "И*** П***"."""
    if not value:
        return value
    return " ".join(word[0] + MASK for word in str(value).split())


def mask_phone(value: str | None) -> str | None:
    """Keep the country code and the last two digits: "+7 915 123-45-12" → "+7 *** ***-**-12"."""
    if not value:
        return value
    digits = re.sub(r"\D", "", str(value))
    if len(digits) < 4:
        return MASK
    tail = digits[-2:]
    if len(digits) == 11 and digits[0] in "78":
        return f"+7 *** ***-**-{tail}"
    return f"+{digits[0]} *** ***-**-{tail}" if str(value).lstrip().startswith("+") else f"*** ***-**-{tail}"


def mask_email(value: str | None) -> str | None:
    """Keep the first character and the domain: "ivan@mail.ru" → "i***@mail.ru"."""
    if not value:
        return value
    local, at, domain = str(value).partition("@")
    if not at:
        return MASK
    return f"{local[:1]}{MASK}@{domain}"


def mask_address(value: Any) -> Any:
    """Street addresses are hidden entirely (city and region stay: they are not personal)."""
    return value if value in (None, "") else MASK


def _hide(value: Any) -> Any:
    return None


#: column / JSON key → masking function. Keys cover our columns and the channel payload shapes.
PII_FIELDS: dict[str, Callable[[Any], Any]] = {
    "customer_name": mask_name,
    "customer_phone": mask_phone,
    "customer_email": mask_email,
    "address": mask_address,
    "lat": _hide,
    "lon": _hide,
    # channel payloads (quarantine, event data)
    "name_customer": mask_name,
    "first_name": mask_name,
    "last_name": mask_name,
    "middle_name": mask_name,
    "full_name": mask_name,
    "fio": mask_name,
    "phone": mask_phone,
    "phone_number": mask_phone,
    "email": mask_email,
    "address_tail": mask_address,
    "street": mask_address,
    "house": mask_address,
    "flat": mask_address,
    "apartment": mask_address,
    "latitude": _hide,
    "longitude": _hide,
}
#: JSON keys whose whole sub-tree is about one person (a customer / recipient object of a channel payload).
PII_OBJECTS = frozenset({"customer", "recipient", "buyer", "addressee", "client"})


def mask_value(key: str, value: Any) -> Any:
    fn = PII_FIELDS.get(key)
    return fn(value) if fn else value


def mask_row(row: Mapping[str, Any], masked: bool) -> dict[str, Any]:
    """A copy of one row with its PII columns masked (unchanged when ``masked`` is False)."""
    if not masked:
        return dict(row)
    return {k: mask_tree(v, True, key=k) for k, v in row.items()}


def mask_rows(rows: Iterable[Mapping[str, Any]], masked: bool) -> list[dict[str, Any]]:
    return [mask_row(r, masked) for r in rows]


def mask_tree(value: Any, masked: bool, *, key: str | None = None, inside_person: bool = False) -> Any:
    """Mask a JSON-like value (event data, channel payloads): PII keys anywhere in the tree; every string of a
    customer / recipient object."""
    if not masked:
        return value
    if isinstance(value, Mapping):
        person = inside_person or (key or "").lower() in PII_OBJECTS
        return {k: mask_tree(v, True, key=str(k), inside_person=person) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_tree(v, True, key=key, inside_person=inside_person) for v in value]
    k = (key or "").lower()
    if k in PII_FIELDS:
        return PII_FIELDS[k](value)
    if inside_person and isinstance(value, str) and value:
        return MASK
    return value
