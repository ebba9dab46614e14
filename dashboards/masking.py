"""Masking of customer personal data (names, phones, e-mails, addresses, postcodes, coordinates, free text
the customer wrote) for roles that must not see it (``User.masked_pii``: managers). Every page shows
customer data only through this module.

    mask_name("Иван Петров")          -> "И*** П***"
    mask_phone("+7 915 123-45-12")    -> "+7 *** ***-**-12"
    mask_email("ivan.petrov@mail.ru") -> "i***@mail.ru"
    mask_address("ул. Тверская, 1")   -> "***"

Why rules and not a list of keys: each channel names the same data differently (Shopify ``address1`` /
``zip`` / ``note``, Wildberries ``fullAddress`` / ``comment``, the call centre's ``postcode``, Shopify
returns' ``customer_note``, CDEK's ``recipient.phones[].number``) and the next channel will bring new names.
A key is classified by its words — ``fullAddress``, ``full_address`` and ``address2`` all read as
``address`` — and a value is classified by the key it sits under, at any depth:

* coordinates (``lat``, ``lon``, ``latitude`` …) → removed;
* phones (``phone``, ``customer_phone``, ``phones`` …), e-mails (``email``, ``contact_email`` …) → masked;
* person names (``first_name``, ``fio``, ``customer_name`` …) → initials;
* addresses (``address*``, ``street``, ``house``, ``flat``, ``zip``, ``postcode`` …) → hidden; an address
  *object* (``shipping_address: {…}``) keeps only its city / region / country;
* free text (``comment``, ``note``, ``customer_note``, ``buyer_comment``, ``reason_text`` …) → hidden;
* a person object (``customer``, ``recipient``, ``buyer``, ``addressee`` …) → every value in it hidden.

Whatever the key, e-mail addresses and written-out phone numbers inside any other text are masked too.
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


# -- classifying keys -------------------------------------------------------------------------------------------

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def key_words(key: str | None) -> tuple[str, ...]:
    """The words of a key, lower case, digits dropped: "fullAddress" → ("full", "address"),
    "address2" → ("address",), "buyer-comment" → ("buyer", "comment")."""
    if not key:
        return ()
    words = re.split(r"[^a-z0-9]+", _CAMEL.sub("_", str(key)).lower())
    return tuple(w for w in (re.sub(r"\d+", "", w) for w in words) if w)


COORDINATE_WORDS = frozenset({"lat", "lon", "lng", "latitude", "longitude", "coords", "coordinates", "geo"})
PHONE_WORDS = frozenset({"phone", "phones", "mobile", "tel", "telephone", "msisdn", "whatsapp"})
EMAIL_WORDS = frozenset({"email", "emails", "mail"})
#: a "name" key is a person's name only next to one of these words (product and warehouse names are not)
NAME_QUALIFIERS = frozenset(
    {
        "first", "last", "middle", "full", "given", "family", "second", "sur", "customer", "recipient",
        "buyer", "client", "contact", "addressee", "receiver", "person", "billing", "shipping", "payer",
    }
)  # fmt: skip
NAME_WORDS = frozenset({"fio", "surname", "patronymic", "firstname", "lastname", "fullname", "middlename"})
ADDRESS_WORDS = frozenset(
    {
        "address", "addresses", "addr", "street", "house", "flat", "apartment", "apt", "building", "block",
        "entrance", "floor", "intercom", "room", "zip", "zipcode", "postcode", "postal", "postindex",
    }
)  # fmt: skip
#: "post code", "post index" written as two words
ADDRESS_PAIRS = frozenset({("post", "code"), ("post", "index")})
FREE_TEXT_WORDS = frozenset(
    {"comment", "comments", "note", "notes", "remark", "remarks", "instruction", "instructions"}
)
FREE_TEXT_KEYS = frozenset({"reason_text", "message_to_seller", "gift_message"})
#: keys whose object is about one person: every value inside is hidden
PERSON_WORDS = frozenset(
    {
        "customer", "recipient", "buyer", "addressee", "client", "receiver", "consignee", "payer", "contact",
        "contacts", "person", "passport",
    }
)  # fmt: skip
#: keys of an address object that are not personal (kept, like the orders' own city and region columns)
PLACE_KEYS = frozenset(
    {"city", "region", "province", "province_code", "region_code", "country", "country_code", "country_name"}
)


def _is_name(words: tuple[str, ...]) -> bool:
    if any(w in NAME_WORDS for w in words):
        return True
    return "name" in words and any(w in NAME_QUALIFIERS for w in words)


def _is_address(words: tuple[str, ...]) -> bool:
    if any(w in ADDRESS_WORDS for w in words):
        return True
    return any(pair in ADDRESS_PAIRS for pair in zip(words, words[1:], strict=False))


def classify(key: str | None) -> str | None:
    """What a key holds: "coordinate", "phone", "email", "name", "address", "free_text", "person" or None
    (not personal by its name). Order matters: ``email_address`` is an e-mail, ``address_phone`` a phone."""
    words = key_words(key)
    if not words:
        return None
    if any(w in COORDINATE_WORDS for w in words):
        return "coordinate"
    if any(w in PHONE_WORDS for w in words):
        return "phone"
    if any(w in EMAIL_WORDS for w in words) or "e_mail" in str(key).lower():
        return "email"
    if _is_name(words):
        return "name"
    if _is_address(words):
        return "address"
    if any(w in FREE_TEXT_WORDS for w in words) or "_".join(words) in FREE_TEXT_KEYS:
        return "free_text"
    if any(w in PERSON_WORDS for w in words):
        return "person"
    return None


#: how a scalar of each kind is masked
SCALAR_MASKS: dict[str, Callable[[Any], Any]] = {
    "coordinate": _hide,
    "phone": lambda v: mask_phone(v) if isinstance(v, str | int) and not isinstance(v, bool) else _all(v),
    "email": lambda v: mask_email(v) if isinstance(v, str) else _all(v),
    "name": lambda v: mask_name(v) if isinstance(v, str) else _all(v),
    "address": mask_address,
    "free_text": mask_address,
}


def _all(value: Any) -> Any:
    """Hide a value entirely (inside a person object): strings and numbers; None, booleans and empty text
    stay, since they tell nothing about the person."""
    if value is None or isinstance(value, bool) or value == "":
        return value
    return MASK


# -- masking text that slipped into other fields ----------------------------------------------------------------

_EMAIL_IN_TEXT = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# a phone written out: "+7 915 123-45-12", "+79151234512", "8 (915) 123-45-12" — a leading "+" or the
# formatting tells it from a tracking number or a barcode (bare digits are left alone)
_PHONE_IN_TEXT = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s\-]*\(?\d{2,4}\)?|8[\s\-]*\(\d{3}\)|8[\s\-]+\d{3})[\s\-]*\d{2,4}[\s\-]*\d{2}[\s\-]*\d{2}(?!\d)"
)


def mask_text(value: str) -> str:
    """E-mail addresses and written-out phone numbers inside free text, masked; the rest unchanged."""
    if "@" in value:
        value = _EMAIL_IN_TEXT.sub(lambda m: mask_email(m.group(0)) or MASK, value)
    if any(c.isdigit() for c in value):
        value = _PHONE_IN_TEXT.sub(lambda m: mask_phone(m.group(0)) or MASK, value)
    return value


# -- rows and trees ---------------------------------------------------------------------------------------------


def mask_value(key: str, value: Any) -> Any:
    """One value under ``key``, masked by what the key holds."""
    return mask_tree(value, True, key=key)


def mask_row(row: Mapping[str, Any], masked: bool) -> dict[str, Any]:
    """A copy of one row with its PII columns masked (unchanged when ``masked`` is False)."""
    if not masked:
        return dict(row)
    return {k: mask_tree(v, True, key=k) for k, v in row.items()}


def mask_rows(rows: Iterable[Mapping[str, Any]], masked: bool) -> list[dict[str, Any]]:
    return [mask_row(r, masked) for r in rows]


def mask_tree(value: Any, masked: bool, *, key: str | None = None, inside_person: bool = False) -> Any:
    """Mask a JSON-like value (a row's column, event data, a channel's raw payload) at any depth: each value
    by the kind of the key it sits under (:func:`classify`); everything inside a person object or free text;
    everything but the place names inside an address object; e-mails and phones inside any other text."""
    if not masked:
        return value
    return _walk(value, classify(key), inside_person)


#: kinds a container passes on to its children that have no kind of their own ("phones": [{"number": …}])
_INHERITED = frozenset({"coordinate", "phone", "email", "name", "address", "free_text"})


def _walk(value: Any, kind: str | None, inside: bool) -> Any:
    if isinstance(value, Mapping):
        inside = inside or kind == "person"
        inherited = kind if kind in _INHERITED else None
        out = {}
        for k, v in value.items():
            if inherited == "address" and not inside and str(k).lower() in PLACE_KEYS:
                out[k] = v  # the city / region of an address object is not personal
            else:
                out[k] = _walk(v, classify(str(k)) or inherited, inside)
        return out
    if isinstance(value, list | tuple):
        return [_walk(v, kind, inside) for v in value]
    if kind in SCALAR_MASKS:
        return SCALAR_MASKS[kind](value)
    if inside or kind == "person":
        return _all(value)
    if isinstance(value, str):
        return mask_text(value)
    return value
