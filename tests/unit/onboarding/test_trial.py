"""A unit's trial judges its manifest as loading the whole county with the file in place
judges it, without reading the other units' manifests again: the same problems (named by
file and field), the same refusal when the county itself does not validate, the same plan.

The reference here is the trial as it was before it kept the county's loaded inventory: the
manifests copied beside the unit's file into a new folder, loaded by `County` from there and
planned (`_whole_copy`, as trial.run did at 87a7bc8)."""
from __future__ import annotations

import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from controlplane.core import county as county_mod
from controlplane.core import inventory, yamlsafe
from controlplane.core.county import County
from controlplane.core.errors import ManifestError, Problem
from controlplane.onboarding import trial
from controlplane.sites import apply as apply_mod
from tests.helpers import CLUSTER, hosts, tenant, write_inventory

DOMAIN = CLUSTER["domain"]


def _whole_copy(county: County, name: str, text: str) -> trial.Trial:
    """The trial before: every manifest copied with the unit's file in place, the copy
    loaded and planned."""
    with tempfile.TemporaryDirectory(prefix="govhost-trial-ref-") as tmp:
        root = Path(tmp) / "inventory"
        root.mkdir()
        for f in ("cluster.yaml", "hosts.yaml"):
            shutil.copy2(county.root / f, root / f)
        for d in ("tenants", "wording"):
            if (county.root / d).is_dir():
                shutil.copytree(county.root / d, root / d)
        (root / "tenants").mkdir(exist_ok=True)
        (root / "tenants" / f"{name}.yaml").write_text(text, encoding="utf-8")
        copy = County(root, county.state_dir)
        try:
            inv = copy.inv
        except ManifestError as exc:
            mine = f"tenants/{name}.yaml"
            problems = [p for p in exc.problems if p.file.endswith(mine) or name in p.message]
            if not problems:
                problems = [Problem("inventory", "", "the county's inventory does not "
                                    "validate today; an operator must fix it first")]
            return trial.Trial(problems)
        with county.state() as st_:
            _, p = apply_mod.prepare(copy, st_)
    plan = p.to_json()
    mine_plan = next((t for t in plan["tenants"] if t["tenant"] == name), None)
    return trial.Trial([], {"tenant": mine_plan, "units_after": len(inv.tenants), "nodes": [
        {"node": n["node"], "added": n["added"], "changed": len(n["changed"]),
         "removed": n["removed"]} for n in plan["nodes"] if n["needed"]]}, len(inv.tenants))


# "chahe-cun.yaml" sorts before "chahe.yaml" though "chahe" sorts before "chahe-cun": which
# of two files is told that a name is taken follows the files' order.
BASE = [
    tenant("jiaoyu", aliases=[f"jyj.{DOMAIN}"], messages={"code": "JY"}),
    tenant("chahe", kind="township"),
    tenant("chahe-cun", messages={"code": "CH"}),
    tenant("renshe", site={"type": "php"}),
]


def _county(tmp: Path, base: str, applied: bool) -> County:
    """A county of BASE on three nodes (n1 holds the database), its plan applied or not,
    with the mistake `base` in its own files."""
    doc = hosts(3)
    doc["nodes"][0]["roles"] = ["web", "db"]
    root = write_inventory(tmp / "inventory", BASE, cluster={**CLUSTER, "console": {}},
                           host_doc=doc)
    county = County(root, tmp / "state")
    if applied:
        with county.state() as st_:
            _, plan = apply_mod.prepare(county, st_)
            st_.save_placements(plan.placement)
            for node, rel in plan.releases.items():
                st_.record_applied(node, rel.id, rel.digests, 1)
    if base == "other-broken":
        _edit(root, "chahe", contact={"name": "x", "email": "not-an-email", "phone": "1"})
    elif base == "own-broken":
        _edit(root, "jiaoyu", colour="red")
    elif base == "yml-beside":
        (root / "tenants" / "tiyu.yml").write_text(yaml.safe_dump(tenant("tiyu")))
    elif base == "taken-twice":
        _edit(root, "chahe-cun", aliases=[f"jyj.{DOMAIN}"])
    return county


def _edit(root: Path, name: str, **fields) -> None:
    doc = next(t for t in BASE if t["name"] == name)
    (root / "tenants" / f"{name}.yaml").write_text(
        yaml.safe_dump({**doc, **fields}, allow_unicode=True))


ALIASES = [f"jyj.{DOMAIN}", f"chahe.{DOMAIN}", f"chahe-cun.{DOMAIN}", f"www.{DOMAIN}", DOMAIN,
           f"console.{DOMAIN}", f"a.preview.{DOMAIN}", f"new.{DOMAIN}", f"ftp.{DOMAIN}",
           "tiyu.example.org"]
SITES = [None, {"type": "php", "database": True}, {"type": "php"},
         {"type": "proxy", "upstreams": ["http://127.0.0.1:8080"]},
         {"type": "proxy", "upstreams": ["http://10.77.0.11"]},
         {"type": "proxy", "upstreams": ["http://192.0.2.7:8080"]}]
BAD = [{}, {"colour": "red"}, {"kind": "company"}, {"replicas": 0},
       {"contact": {"name": "x", "email": "not-an-email", "phone": "1"}},
       {"sections": [{"name": "cun1", "title": "一村"}, {"name": "cun1", "title": "二村"}]}]
BROKEN_TEXT = ["name: [unclosed", "", "- a list\n", "a: &x 1\nb: *x\n",
               "name: tiyu\nname: tiyu\n", "title: " + "长" * 30_000 + "\n"]


@st.composite
def manifests(draw) -> tuple[str, str]:
    name = draw(st.sampled_from(["jiaoyu", "chahe", "chahe-cun", "renshe", "tiyu", "chahe-a",
                                 "chahe-cun-b", "www", "a"]))
    if draw(st.integers(0, 9)) == 0:
        return name, draw(st.sampled_from(BROKEN_TEXT))
    doc = tenant(draw(st.sampled_from([name, name, name, name, "other"])))
    aliases = draw(st.lists(st.sampled_from(ALIASES), max_size=2, unique=True))
    if aliases:
        doc["aliases"] = aliases
    code = draw(st.sampled_from([None, "JY", "CH", "TY"]))
    if code:
        doc["messages"] = {"code": code}
    replicas = draw(st.sampled_from([None, 1, 3, 4]))
    if replicas:
        doc["replicas"] = replicas
    site = draw(st.sampled_from(SITES))
    if site:
        doc["site"] = site
    doc.update(draw(st.sampled_from(BAD)))
    return name, yaml.safe_dump(doc, allow_unicode=True)


def _text(name: str, **fields) -> str:
    return yaml.safe_dump(tenant(name, **fields), allow_unicode=True)


@settings(max_examples=60)
# a unit whose file comes before the other's: the other file is told (by the unit's name)
@example(("chahe-a", _text("chahe-a", aliases=[f"chahe.{DOMAIN}"])), "ok", True, None)
@example(("chahe-cun-b", _text("chahe-cun-b", messages={"code": "CH"})), "ok", True, None)
@example(("tiyu", _text("tiyu")), "yml-beside", True, None)
@example(("tiyu", _text("tiyu", aliases=[f"new.{DOMAIN}"])), "ok", True, "alias")
@example(("jiaoyu", _text("jiaoyu")), "own-broken", True, None)
@example(("tiyu", "title: " + "长" * 30_000 + "\n"), "ok", True, None)
@given(manifests(), st.sampled_from(["ok", "ok", "ok", "other-broken", "own-broken",
                                     "yml-beside", "taken-twice"]),
       st.booleans(), st.sampled_from([None, "alias", "code"]))
def test_a_trial_refuses_and_plans_as_loading_the_whole_county_with_the_file(
        manifest, base, loaded, edited_after):
    """Equivalence with the whole copy: good manifests and bad ones (names, aliases and
    message codes another unit holds, reserved names, bad fields and YAML, too many
    replicas, a database without a db node), over a county that loads and one that does
    not, loaded before the trial or not, and one changed on disk after it was loaded."""
    name, text = manifest
    with tempfile.TemporaryDirectory(prefix="govhost-trial-test-") as tmp:
        county = _county(Path(tmp), base, applied=base == "ok")
        if loaded:
            try:
                county.inv
            except ManifestError:
                pass
        if edited_after == "alias":                  # an operator's edit the console missed
            _edit(county.root, "chahe", aliases=[f"new.{DOMAIN}"])
        elif edited_after == "code":
            _edit(county.root, "renshe", messages={"code": "TY"})
        got = trial.run(county, name, text)
        want = _whole_copy(county, name, text)
    assert got.problems == want.problems
    assert got.plan == want.plan
    assert got.units_after == want.units_after


def test_a_county_that_does_not_validate_refuses_every_trial(tmp_path):
    county = _county(tmp_path, "other-broken", applied=False)
    got = trial.run(county, "tiyu", yaml.safe_dump(tenant("tiyu")))
    assert got.plan is None
    assert [str(p) for p in got.problems] == [
        "inventory: the county's inventory does not validate today; an operator must fix it "
        "first"]


def test_a_unit_whose_own_file_breaks_the_county_can_mend_it(tmp_path):
    county = _county(tmp_path, "own-broken", applied=False)
    got = trial.run(county, "jiaoyu", yaml.safe_dump(BASE[0], allow_unicode=True))
    assert not got.problems and got.plan["tenant"]["tenant"] == "jiaoyu"
    assert got.units_after == len(BASE)


def test_a_problem_names_the_file_and_field_and_whose_name_it_is(tmp_path):
    county = _county(tmp_path, "ok", applied=True)
    county.inv
    got = trial.run(county, "tiyu", yaml.safe_dump(tenant("tiyu", aliases=[f"jyj.{DOMAIN}"],
                                                          messages={"code": "CH"})))
    assert [str(p) for p in got.problems] == [
        f"inventory/tenants/tiyu.yaml: aliases[0]: 'jyj.{DOMAIN}' is already claimed by "
        "inventory/tenants/jiaoyu.yaml (aliases[0])",
        "inventory/tenants/tiyu.yaml: messages.code: 'CH' is already the message code of "
        "inventory/tenants/chahe-cun.yaml; each unit's numbers need their own code"]
    # the other way round: the unit's file comes first, the other file is told
    got = trial.run(county, "bai", yaml.safe_dump(tenant("bai", messages={"code": "JY"})))
    assert [str(p) for p in got.problems] == [
        "inventory/tenants/jiaoyu.yaml: messages.code: 'JY' is already the message code of "
        "inventory/tenants/bai.yaml; each unit's numbers need their own code"]


class _Opens:
    """The files of a folder opened while it counts (Python's audit hook for open; a hook
    stays for the process, so it counts only inside `with`)."""

    hooked = False
    current: "_Opens | None" = None

    def __init__(self, folder: Path):
        self.folder = str(folder.resolve()) + "/"
        self.opened: Counter[str] = Counter()
        if not _Opens.hooked:
            sys.addaudithook(_Opens._hook)
            _Opens.hooked = True

    @staticmethod
    def _hook(event: str, args: tuple) -> None:
        me = _Opens.current
        if me is not None and event == "open" and isinstance(args[0], (str, Path)):
            path = str(args[0])
            if path.startswith(me.folder):
                me.opened[path[len(me.folder):]] += 1

    def __enter__(self) -> "_Opens":
        _Opens.current = self
        return self

    def __exit__(self, *exc) -> None:
        _Opens.current = None


def test_a_trial_reads_no_other_manifest_once_the_county_is_loaded(tmp_path, monkeypatch):
    units = [tenant(f"unit{i:02d}") for i in range(40)]
    doc = hosts(3)
    root = write_inventory(tmp_path / "inventory", units, host_doc=doc)
    county = County(root, tmp_path / "state")
    assert len(county.inv.tenants) == 40
    # the files were written just now: a stamp is trusted once they are a second old
    real_ns = county_mod.time.time_ns
    monkeypatch.setattr(county_mod.time, "time_ns", lambda: real_ns() + 2_000_000_000)
    with _Opens(root) as opens:             # the trials' own inventory, read once
        trial.run(county, "tiyu", yaml.safe_dump(tenant("tiyu")))
    assert sum(n for p, n in opens.opened.items() if p.startswith("tenants/")) == 40
    parsed: Counter[str] = Counter()
    real_loads = yamlsafe.loads

    def counting_loads(text: str):
        parsed["yaml"] += 1
        return real_loads(text)
    monkeypatch.setattr(yamlsafe, "loads", counting_loads)
    edited = yaml.safe_dump(tenant("unit07", title="测试单位 改"), allow_unicode=True)
    for name, text in (("unit07", edited), ("tiyu", yaml.safe_dump(tenant("tiyu")))):
        parsed.clear()
        with _Opens(root) as opens:
            got = trial.run(county, name, text)
        assert not got.problems and got.plan["tenant"]["tenant"] == name
        assert parsed["yaml"] == 1                     # the unit's manifest, and no other
        assert not [p for p in opens.opened if p.startswith("tenants/")], opens.opened
    # a file changed on disk since: the county is read again, once, then kept
    (root / "tenants" / "unit03.yaml").write_text(yaml.safe_dump(tenant("unit03", aliases=[
        f"x.{CLUSTER['domain']}"]), allow_unicode=True))
    with _Opens(root) as opens:
        got = trial.run(county, "tiyu", yaml.safe_dump(tenant("tiyu", aliases=[
            f"x.{CLUSTER['domain']}"])))
    assert [p.field for p in got.problems] == ["aliases[0]"]
    assert sum(n for p, n in opens.opened.items() if p.startswith("tenants/")) == 40
    with _Opens(root) as opens:
        trial.run(county, "tiyu", yaml.safe_dump(tenant("tiyu")))
    assert not [p for p in opens.opened if p.startswith("tenants/")]


def test_with_tenant_is_load_with_the_file_in_place(tmp_path):
    """The pure step on its own: inventory.with_tenant over a loaded county gives what
    `load` gives for the same files with the one file given (`overlay`)."""
    county = _county(tmp_path, "ok", applied=False)
    base = county.inv
    for name, doc in (("chahe", tenant("chahe", aliases=[f"bgs.{DOMAIN}"])),
                      ("tiyu", tenant("tiyu"))):
        raw = yaml.safe_dump(doc, allow_unicode=True).encode()
        fast = inventory.with_tenant(base, f"{name}.yaml", raw)
        whole = inventory.load(county.root, county.state_dir, overlay={f"{name}.yaml": raw})
        assert fast.tenants == whole.tenants and fast.sources == whole.sources
        assert list(fast.sources) == list(whole.sources)
    assert base.tenant("tiyu") is None                 # the county's own is untouched


def _counted_county(tmp_path, monkeypatch, shift_s: float = 2.0):
    units = [tenant(f"unit{i:02d}") for i in range(6)]
    root = write_inventory(tmp_path / "inventory", units, host_doc=hosts(3))
    county = County(root, tmp_path / "state")
    real_ns = county_mod.time.time_ns
    monkeypatch.setattr(county_mod.time, "time_ns",
                        lambda: real_ns() + int(shift_s * 1_000_000_000))
    return county, root


def test_a_trial_on_a_broken_county_leaves_the_consoles_inventory_as_it_was(tmp_path,
                                                                            monkeypatch):
    """Found by review: a trial (a stranger's site request, even one refused) read the
    county again into the console's own inventory, and a file broken on disk at that moment
    (an operator's edit half saved) made every page and login fail until it was mended.
    The trials keep an inventory of their own; a load that fails keeps nothing."""
    county, root = _counted_county(tmp_path, monkeypatch)
    before = county.inv
    (root / "tenants" / "unit03.yaml").write_text("name: unit03\n  bad: [\n")
    got = trial.run(county, "tiyu", yaml.safe_dump(tenant("tiyu")))
    assert [p.file for p in got.problems] == ["inventory"]        # does not validate today
    assert county.inv is before and len(county.inv.tenants) == 6


def test_a_dangling_link_planted_in_tenants_is_seen_by_the_trial(tmp_path, monkeypatch):
    """Found by review: the stamp left out an entry it could not follow, so a dangling link
    added to tenants/ (which a load refuses) left the trials' inventory trusted and a
    request was accepted into a county that no longer loads."""
    county, root = _counted_county(tmp_path, monkeypatch)
    assert not trial.run(county, "tiyu", yaml.safe_dump(tenant("tiyu"))).problems
    (root / "tenants" / "zz.yaml").symlink_to(root / "missing.yaml")
    got = trial.run(county, "tiyu", yaml.safe_dump(tenant("tiyu")))
    assert [p.file for p in got.problems] == ["inventory"]


def test_a_stamp_of_files_changed_within_a_second_is_not_trusted(tmp_path, monkeypatch):
    """A second same-size write within one tick of a coarse clock leaves a file's times as
    they were: a stamp taken less than a second after a change does not vouch for the
    files, and the next trial reads them again (then keeps them once they are older)."""
    county, root = _counted_county(tmp_path, monkeypatch, shift_s=0)
    for expect in (6, 6):
        with _Opens(root) as opens:
            trial.run(county, "tiyu", yaml.safe_dump(tenant("tiyu")))
        assert sum(n for p, n in opens.opened.items() if p.startswith("tenants/")) == expect
    real_ns = county_mod.time.time_ns
    monkeypatch.setattr(county_mod.time, "time_ns", lambda: real_ns() + 2_000_000_000)
    for expect in (6, 0):
        with _Opens(root) as opens:
            trial.run(county, "tiyu", yaml.safe_dump(tenant("tiyu")))
        assert sum(n for p, n in opens.opened.items() if p.startswith("tenants/")) == expect
