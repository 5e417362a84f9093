"""When a citizen's message must be answered (pure): the county's working days, the due
date, the reminder, the county's alert and the inspections' veto.

The national indicators (国办秘函〔2019〕19号) veto a site with a message left unanswered for
more than three months; the county sets its own, much shorter, due date in working days
(cluster.yaml `messages:`). Days are the county's (UTC+8): a message written at 01:00 on a
Monday in the county is Monday's, though it is Sunday in UTC.
"""
from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Literal

from controlplane.core.manifest import MessagesSettings

COUNTY_TIME = timezone(timedelta(hours=8))
VETO_MONTHS = 3

# Where a message stands, from the calmest: answered; open (not yet near its due date);
# due_soon (the reminder is out); overdue (past the due date); alert (the county is told,
# `alert_days` unanswered); veto (more than three months unanswered: the inspections fail
# the site).
Standing = Literal["answered", "open", "due_soon", "overdue", "alert", "veto"]
LATE: frozenset[str] = frozenset({"overdue", "alert", "veto"})


@dataclass(frozen=True)
class Calendar:
    """Monday to Friday, less the county's holidays, plus its extra working days."""
    holidays: frozenset[date] = frozenset()
    extra_workdays: frozenset[date] = frozenset()

    @classmethod
    def of(cls, settings: MessagesSettings) -> "Calendar":
        return cls(frozenset(settings.holidays), frozenset(settings.extra_workdays))

    def is_workday(self, day: date) -> bool:
        if day in self.extra_workdays:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def add_workdays(self, day: date, n: int) -> date:
        """The `n`th working day after `day` (`day` itself never counts: a message of a
        Friday evening or a Sunday is due as one of the Monday before it would be, plus
        nothing for the days the office was shut)."""
        if n < 0:
            raise ValueError("n must not be negative")
        while n:
            day += timedelta(days=1)
            if self.is_workday(day):
                n -= 1
        return day


def county_day(received_utc: str) -> date:
    """The county's day of a node's UTC time stamp (`2026-12-05T16:30:00Z` is 6 December)."""
    if len(received_utc) != 20 or not received_utc.endswith("Z"):
        raise ValueError(f"not a UTC time stamp: {received_utc!r}")
    t = datetime.fromisoformat(received_utc[:-1]).replace(tzinfo=timezone.utc)
    return t.astimezone(COUNTY_TIME).date()


def county_midnight_utc(day: date) -> str:
    """The start of the county's `day` as the nodes write times (UTC), for comparing with
    a message's `received`."""
    start = datetime.combine(day, datetime.min.time(), COUNTY_TIME)
    return start.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def today_in_county(now: float) -> date:
    return datetime.fromtimestamp(now, COUNTY_TIME).date()


def add_months(day: date, months: int) -> date:
    """The same day `months` later, or that month's last day (30 November + 3 months is 28
    or 29 February)."""
    m = day.month - 1 + months
    year, month = day.year + m // 12, m % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True)
class Deadline:
    received: date      # the county's day the message came in
    due: date           # answered by the end of this day
    remind: date        # the unit is mailed on this day if it is still open
    alert: date         # the county is alerted on this day if it is still open
    veto: date          # from this day on it is "more than three months" unanswered

    def standing(self, answered: bool, today: date) -> Standing:
        if answered:
            return "answered"
        if today >= self.veto:
            return "veto"
        if today >= self.alert:
            return "alert"
        if today > self.due:
            return "overdue"
        if today >= self.remind:
            return "due_soon"
        return "open"


def deadline(received_utc: str, settings: MessagesSettings) -> Deadline:
    cal = Calendar.of(settings)
    day = county_day(received_utc)
    due = cal.add_workdays(day, settings.due_workdays)
    remind = cal.add_workdays(day, settings.due_workdays - settings.remind_workdays)
    return Deadline(received=day, due=due, remind=remind,
                    alert=day + timedelta(days=settings.alert_days),
                    veto=add_months(day, VETO_MONTHS) + timedelta(days=1))


def days_to_answer(received_utc: str, answered_at: float) -> int:
    """Calendar days from the county day a message came in to the day it was answered (0:
    the same day), as the yearly figures count them."""
    return (today_in_county(answered_at) - county_day(received_utc)).days
