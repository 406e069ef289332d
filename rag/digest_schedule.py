"""``TGRAG_DIGEST_SCHEDULE``: the time of day, in a time zone, of the scheduled digest.

Written ``HH:MM`` then a zone: an IANA name (``09:00 Europe/Moscow``), ``UTC``, or an offset
(``08:30 +03:00``, ``UTC+3``); a bare time is UTC.  Each local day has one *due* moment; the
digest sent then covers the day before it, from the previous due moment to this one, so
consecutive digests neither overlap nor leave a gap (also across a daylight-saving change).

This module only computes times; the delivery (``rag.digest_delivery``) and its record of what
was sent use it.  It imports nothing from the rest of tgrag but its errors, so the settings can
validate the value when they are read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rag.errors import InputError

_SPEC = re.compile(r"^\s*(\d{1,2}):(\d{2})(?:\s+(\S+))?\s*$")
_OFFSET = re.compile(r"^(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)
HINT = ("write the time of day and a time zone, e.g. `09:00 Europe/Moscow`, `08:30 UTC` or "
        "`21:00 +03:00`")


@dataclass(frozen=True, slots=True)
class DigestSchedule:
    """One moment a day: ``at`` o'clock in ``zone``."""

    at: time
    zone: tzinfo
    zone_name: str

    @classmethod
    def parse(cls, text: str) -> DigestSchedule:
        """The schedule ``text`` describes; :class:`InputError` (saying why) if none."""
        match = _SPEC.match(text or "")
        if match is None:
            raise InputError(f"digest schedule {text!r} is not a time of day", hint=HINT)
        hour, minute, zone_text = int(match.group(1)), int(match.group(2)), match.group(3)
        if hour > 23 or minute > 59:
            raise InputError(f"digest schedule {text!r}: {hour:02d}:{minute:02d} is not a time "
                             "of day", hint="hours 00-23, minutes 00-59: " + HINT)
        zone, name = _zone(zone_text or "UTC")
        return cls(time(hour, minute), zone, name)

    def __str__(self) -> str:
        return f"{self.at:%H:%M} {self.zone_name}"

    def due_on(self, day: date) -> datetime:
        """The due moment of local ``day``, in UTC.  A time a DST change skips comes as late as
        the skipped hour (02:30 → 03:30); a time it repeats, the first time (PEP 495 ``fold=0``)."""
        return datetime.combine(day, self.at, tzinfo=self.zone).astimezone(UTC)

    def local_day(self, moment: datetime) -> date:
        return moment.astimezone(self.zone).date()

    def last_due(self, now: datetime) -> datetime:
        """The latest due moment at or before ``now``."""
        day = self.local_day(now)
        due = self.due_on(day)
        return due if due <= now else self.due_on(day - timedelta(days=1))

    def next_due(self, now: datetime) -> datetime:
        """The first due moment after ``now``."""
        day = self.local_day(now)
        due = self.due_on(day)
        return due if due > now else self.due_on(day + timedelta(days=1))

    def period(self, due: datetime) -> tuple[int, int]:
        """The digest of the day that ends at ``due``: ``(previous due, due)`` in unix seconds."""
        previous = self.due_on(self.local_day(due) - timedelta(days=1))
        return int(previous.timestamp()), int(due.timestamp())

    def day_key(self, due: datetime) -> str:
        """The local date of a due moment, ``YYYY-MM-DD``: what "once a day" counts by."""
        return self.local_day(due).isoformat()


def _zone(text: str) -> tuple[tzinfo, str]:
    if text.upper() in ("UTC", "GMT", "Z"):
        return UTC, "UTC"
    offset = _OFFSET.match(text)
    if offset:
        sign, hours, minutes = offset.group(1), int(offset.group(2)), int(offset.group(3) or 0)
        if hours > 14 or minutes > 59:
            raise InputError(f"time zone offset {text!r} is out of range", hint=HINT)
        delta = timedelta(hours=hours, minutes=minutes) * (-1 if sign == "-" else 1)
        name = f"UTC{sign}{hours:02d}:{minutes:02d}"
        return timezone(delta, name), name
    try:
        return ZoneInfo(text), text
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(
            f"unknown time zone {text!r}",
            hint=HINT + "; zone names are IANA ones (Europe/Moscow, Asia/Yekaterinburg); without a "
                 "time zone database on this system, `pip install tzdata`",
        ) from None
