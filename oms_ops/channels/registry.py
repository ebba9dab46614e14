"""The registry: the only list of sales channels in the code.

Everything that works on "every channel" loops over :data:`CHANNELS` — normalisation and quarantine
replay (mappers), ATS (pushers), the outbox drain (status pushers), the connector settings and the Dagster
resource (environment variables), the order assets with their checks and schedules, and the seed (catalog
listings and location ids). Adding a channel = a module in this package declaring ``CHANNEL`` + its line
here + its simulator + its tests (docs/channels.md).
"""

from __future__ import annotations

from oms_ops.channels import callcentre, ozon, pos, webstore, wildberries
from oms_ops.channels.base import Channel

CHANNELS: tuple[Channel, ...] = (
    ozon.CHANNEL,
    wildberries.CHANNEL,
    webstore.CHANNEL,
    pos.CHANNEL,
    callcentre.CHANNEL,
)
BY_CODE: dict[str, Channel] = {c.code: c for c in CHANNELS}


class UnknownChannel(KeyError):
    """A channel code that no module of this package declares."""


def channel(code: str) -> Channel:
    """The record of channel ``code``; :class:`UnknownChannel` names the known ones otherwise."""
    try:
        return BY_CODE[code]
    except KeyError:
        raise UnknownChannel(f"unknown channel {code!r} (known: {', '.join(BY_CODE)})") from None


def find(code: str) -> Channel | None:
    """The record of channel ``code`` (or of a channel whose quarantine source it is), or None."""
    if code in BY_CODE:
        return BY_CODE[code]
    return next((c for c in CHANNELS if code in c.sources), None)


def with_ats() -> tuple[Channel, ...]:
    return tuple(c for c in CHANNELS if c.ats is not None)


def env_vars() -> dict[str, dict[str, str]]:
    """system → {settings field: environment variable} of every channel with an outside system."""
    return {c.system: dict(c.env) for c in CHANNELS if c.system}
