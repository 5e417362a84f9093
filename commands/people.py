"""`govhost` commands: People of the unit web console (accounts, roles, second factors)."""
from __future__ import annotations

import time
from typing import Optional

import typer

from commands.output import call, county, emit, err, out, table

app = typer.Typer()
user_app = typer.Typer(help="People who log in to the unit web console.", no_args_is_help=True)
app.add_typer(user_app, name="user")


def _people():
    from controlplane.people.store import People
    c = county()
    inv = call(lambda: c.inv)
    return c, inv, People(c.open_state(), inv.secret, inv.cluster.name)


def _show_issued(issued, as_json: bool) -> None:
    data = {"name": issued.person.name, "unit": issued.person.unit,
            "roles": sorted(issued.person.roles), "password": issued.password,
            "totp_secret": issued.totp_secret, "totp_uri": issued.totp_uri}
    if as_json:
        emit(data)
        return
    out.print(f"{issued.person.name} ({issued.person.display}): give these to the person, "
              "once; they are not shown again.", highlight=False)
    out.print(f"  password (to be changed at the first login): {issued.password}",
              highlight=False)
    if issued.totp_secret:
        out.print("  second factor: add it to an authenticator app (TOTP, 6 digits, 30 s)",
                  highlight=False)
        out.print(f"    key: {issued.totp_secret}", highlight=False)
        out.print(f"    or scan/open: {issued.totp_uri}", highlight=False, markup=False)


@user_app.command("add")
def user_add(name: str = typer.Argument(..., help="Login name (a-z, 0-9, . _ -)."),
             display: str = typer.Option(..., "--display", help="The person's name."),
             unit: Optional[str] = typer.Option(None, "--unit", help="Their unit (none for a "
                                                "county operator)."),
             role: list[str] = typer.Option(..., "--role", help="editor, reviewer, admin or "
                                            "operator; repeat for several."),
             email: str = typer.Option("", "--email"),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Add a person; prints their first password and, for reviewers, admins and operators,
    their second factor's key."""
    _, inv, people = _people()
    try:
        issued = call(lambda: people.add(name, display, unit, role,
                                         frozenset(t.name for t in inv.tenants), email),
                      as_json=as_json)
    finally:
        people.st.close()
    _show_issued(issued, as_json)


@user_app.command("list")
def user_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Everyone, with their unit, roles, second factor, last login and lockout."""
    _, _, people = _people()
    try:
        rows = [{"name": p.name, "display": p.display, "unit": p.unit,
                 "roles": sorted(p.roles), "disabled": p.disabled, **people.status(p.name)}
                for p in people.all()]
    finally:
        people.st.close()
    if as_json:
        emit(rows)
        return
    t = table("console users", "name", "display", "unit", "roles", "2FA", "last login",
              "state")
    for r in rows:
        state = ("disabled" if r["disabled"]
                 else f"waiting {r['wait']:.0f} s (failed logins)" if r["wait"]
                 else "must change password" if r["must_change_password"] else "active")
        if r["under_attack"]:
            state += ", under attack"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["last_login"])) \
            if r["last_login"] else "never"
        t.add_row(r["name"], r["display"], r["unit"] or "(county)", ", ".join(r["roles"]),
                  "yes" if r["second_factor"] else "-", when, state)
    out.print(t)


def _toggle(name: str, disabled: bool, as_json: bool) -> None:
    _, _, people = _people()
    try:
        p = call(lambda: people.set_disabled(name, disabled), as_json=as_json)
    finally:
        people.st.close()
    if as_json:
        emit({"name": p.name, "disabled": p.disabled})
    else:
        err.print(f"{p.name}: {'disabled' if p.disabled else 'enabled'}", highlight=False)


@user_app.command("disable")
def user_disable(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Stop a person logging in (kept in the audit log; `enable` undoes it)."""
    _toggle(name, True, as_json)


@user_app.command("enable")
def user_enable(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    _toggle(name, False, as_json)


@user_app.command("reset")
def user_reset(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """A new password and second factor for a person who lost theirs."""
    _, _, people = _people()
    try:
        issued = call(lambda: people.reset(name), as_json=as_json)
    finally:
        people.st.close()
    _show_issued(issued, as_json)
