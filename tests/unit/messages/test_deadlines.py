"""When a message must be answered (pure): working days, the county's day, three months."""
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from controlplane.core.manifest import MessagesSettings
from controlplane.messages.deadlines import (
    Calendar,
    add_months,
    county_day,
    days_to_answer,
    deadline,
)

DAYS = st.dates(min_value=date(2024, 1, 1), max_value=date(2030, 12, 31))


def test_five_working_days_skip_the_weekend_and_the_countys_holidays():
    s = MessagesSettings(holidays=[date(2026, 10, 1), date(2026, 10, 2)],
                         extra_workdays=[date(2026, 10, 10)])
    # a Friday's message: Mon..Fri of the next week
    assert deadline("2026-12-04T02:00:00Z", s).due == date(2026, 12, 11)
    # 30 September (Wed): 1–2 Oct are holidays, Sat 10 Oct is worked
    assert deadline("2026-09-30T02:00:00Z", s).due == date(2026, 10, 9)
    assert deadline("2026-10-07T02:00:00Z", s).due == date(2026, 10, 13)
    # the reminder is one working day before, the alert 60 days after
    d = deadline("2026-12-04T02:00:00Z", s)
    assert (d.remind, d.alert) == (date(2026, 12, 10), date(2027, 2, 2))


def test_the_day_is_the_countys_not_utcs():
    # 23:30 UTC on Sunday 6 December is 07:30 on Monday the 7th in the county
    assert county_day("2026-12-06T23:30:00Z") == date(2026, 12, 7)
    assert deadline("2026-12-06T23:30:00Z", MessagesSettings()).due == date(2026, 12, 14)


def test_more_than_three_months():
    assert add_months(date(2026, 11, 30), 3) == date(2027, 2, 28)
    assert add_months(date(2027, 11, 30), 3) == date(2028, 2, 29)
    d = deadline("2026-01-10T02:00:00Z", MessagesSettings())
    assert d.veto == date(2026, 4, 11)
    assert d.standing(False, date(2026, 4, 10)) == "alert"        # three months: not yet
    assert d.standing(False, date(2026, 4, 11)) == "veto"
    assert d.standing(True, date(2027, 1, 1)) == "answered"


@pytest.mark.parametrize("bad,field", [
    ({"due_workdays": 0}, "due_workdays"), ({"alert_days": 120}, "alert_days"),
    ({"remind_workdays": 5}, "remind_workdays"),
    ({"holidays": [date(2026, 10, 1)], "extra_workdays": [date(2026, 10, 1)]}, "both")])
def test_settings_that_make_no_sense_are_refused(bad, field):
    with pytest.raises(ValidationError, match=field):
        MessagesSettings(**bad)


@given(DAYS, st.integers(min_value=1, max_value=60),
       st.sets(DAYS, max_size=30), st.sets(DAYS, max_size=10))
def test_the_due_date_is_exactly_n_working_days_on(day, n, holidays, extra):
    cal = Calendar(frozenset(holidays - extra), frozenset(extra))
    due = cal.add_workdays(day, n)
    assert due > day and cal.is_workday(due)
    between = [day + timedelta(days=k) for k in range(1, (due - day).days + 1)]
    assert sum(cal.is_workday(d) for d in between) == n


@given(DAYS, st.integers(min_value=1, max_value=20), st.integers(min_value=0, max_value=19),
       st.integers(min_value=7, max_value=85), DAYS)
def test_the_standing_only_gets_worse_while_unanswered(day, due, remind, alert, today):
    if remind >= due:
        return
    s = MessagesSettings(due_workdays=due, remind_workdays=remind, alert_days=alert)
    d = deadline(f"{day.isoformat()}T04:00:00Z", s)
    order = ["open", "due_soon", "overdue", "alert", "veto"]
    assert d.remind <= d.due < d.veto and d.alert < d.veto
    later = today + timedelta(days=1)
    assert order.index(d.standing(False, later)) >= order.index(d.standing(False, today))


def test_days_to_answer_counts_county_days():
    # received 7 December 07:30 county time, answered 9 December 01:00 county time
    answered = 1796749200.0                          # 2026-12-09T01:00 +08:00
    assert days_to_answer("2026-12-06T23:30:00Z", answered) == 2
