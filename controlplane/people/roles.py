"""Who may do what (pure): the console's authorization, checked route by route.

A unit's people act only on their own unit: an editor uploads and submits, a reviewer
decides on its level of the review chain, a unit admin manages the unit's people and SFTP
keys. County operators see every unit (read-only views of what the CLI shows), decide the
county's level of a review chain and the site requests. Nobody of one unit sees or touches
another unit: every action below names the unit it is on, and `may` refuses any unit but
the person's own.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from controlplane.core.errors import GovhostError

Role = Literal["editor", "reviewer", "admin", "operator"]
ROLES: tuple[Role, ...] = ("editor", "reviewer", "admin", "operator")
UNIT_ROLES = frozenset({"editor", "reviewer", "admin"})
# A reviewer, an admin and an operator can change what the public sees or who may:
# they log in with a second factor.
SECOND_FACTOR = frozenset({"reviewer", "admin", "operator"})
NAME = re.compile(r"^[a-z][a-z0-9._-]{1,31}$")

Action = Literal["view_unit", "upload", "submit", "review_unit", "review_county",
                 "propose_rollback", "confirm_rollback", "manage_people", "view_county",
                 "decide_requests", "read_messages", "answer_messages", "forward_messages",
                 "route_messages"]
ACTIONS: tuple[Action, ...] = ("view_unit", "upload", "submit", "review_unit",
                               "review_county", "propose_rollback", "confirm_rollback",
                               "manage_people", "view_county", "decide_requests",
                               "read_messages", "answer_messages", "forward_messages",
                               "route_messages")
# What each role may do on its own unit (operators: on any unit, and county-wide).
_UNIT_GRANTS: dict[str, frozenset[str]] = {
    "editor": frozenset({"view_unit", "upload", "submit", "propose_rollback",
                         "read_messages", "answer_messages", "forward_messages"}),
    "reviewer": frozenset({"view_unit", "review_unit", "confirm_rollback", "read_messages"}),
    "admin": frozenset({"view_unit", "manage_people"}),
    "operator": frozenset({"view_unit", "review_county", "confirm_rollback", "read_messages",
                           "forward_messages"}),
}
# Citizens' messages: a unit's editors read, answer and forward them, its reviewers read
# them to decide answers under review; a unit admin manages people and reads none (the
# citizens' contacts are for those who answer). Operators read any unit's and route them
# (forward a misdirected one), and see the county's overdue list (route_messages).
_COUNTY_GRANTS = frozenset({"view_county", "decide_requests", "route_messages"})


class PeopleError(GovhostError):
    pass


@dataclass(frozen=True)
class Person:
    name: str
    display: str
    unit: str | None                    # None: a county operator
    roles: frozenset[str]
    email: str = ""
    disabled: bool = False

    @property
    def needs_second_factor(self) -> bool:
        return bool(self.roles & SECOND_FACTOR)


def check(name: str, unit: str | None, roles: frozenset[str], units: frozenset[str]) -> None:
    """Refuse a person who could not exist: a bad login name, an unknown role or unit, unit
    roles without a unit, an operator tied to a unit."""
    if not NAME.fullmatch(name):
        raise PeopleError(f"login name {name!r}: 2–32 characters, lower-case letters first, "
                          "then letters, digits, '.', '_' or '-'")
    if not roles:
        raise PeopleError(f"{name}: give at least one role ({', '.join(ROLES)})")
    unknown = sorted(roles - set(ROLES))
    if unknown:
        raise PeopleError(f"{name}: unknown role {', '.join(unknown)}; roles are "
                          f"{', '.join(ROLES)}")
    if "operator" in roles:
        if unit is not None or roles != {"operator"}:
            raise PeopleError(f"{name}: an operator works for the county: no --unit and no "
                              "unit roles")
        return
    if unit is None:
        raise PeopleError(f"{name}: {', '.join(sorted(roles))} work for a unit: give --unit")
    if unit not in units:
        raise PeopleError(f"{name}: no unit named {unit!r} in inventory/tenants/")


def may(person: Person, action: str, unit: str | None = None) -> bool:
    """May `person` do `action` on `unit` (None: a county-wide action)?"""
    if person.disabled or action not in ACTIONS:
        return False
    if unit is None:
        return "operator" in person.roles and action in _COUNTY_GRANTS
    if "operator" not in person.roles and person.unit != unit:
        return False
    return any(action in _UNIT_GRANTS[r] for r in person.roles)
