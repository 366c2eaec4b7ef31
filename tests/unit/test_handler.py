"""The load balancer's membership handler: validation, rendering, coalescing, reload decisions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from layerkit.agent import handler
from layerkit.agent.handler import Paths, Settings, handle, reconcile, render
from layerkit.agent.lbsystem import stats_password
from layerkit.agent.members import (
    Backend,
    MembersError,
    Scope,
    parse_address,
    parse_members,
    select_backends,
    valid_name,
)
from layerkit.agent.runtime import SERVER_OPTIONS
from tests.conftest import IMAGES

TEMPLATE = IMAGES / "haproxy" / "haproxy.cfg.j2"


def member(name: object, addr: object = "172.18.0.5:7946", *, role: str = "web",
           status: str = "alive", **tags: object) -> dict[str, object]:
    return {"name": name, "addr": addr, "port": 7946, "status": status,
            "tags": {"role": role, **tags}, "protocol": {}}


def doc(*members: dict[str, object]) -> str:
    return json.dumps({"members": list(members) or None})


@dataclass
class FakeHaproxy:
    """HAProxy's runtime API over a dict of servers (name -> address, port, admin state)."""

    servers: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    refuse_adds: int = 0
    down: bool = False
    commands: list[str] = field(default_factory=list)

    def __call__(self, command: str) -> str:
        if self.down:
            raise ConnectionRefusedError("no HAProxy")
        self.commands.append(command)
        words = command.split()
        if command.startswith("show servers state"):
            rows = [f"3 webapps {i} {n} {a} 2 {adm} {p}"
                    for i, (n, (a, p, adm)) in enumerate(sorted(self.servers.items()), 1)]
            return "\n".join(["1", "# be_id be_name srv_id srv_name srv_addr srv_op_state "
                              "srv_admin_state srv_port", *rows]) + "\n"
        if command == "show stat":
            return "# pxname,svname,scur\n"
        name = words[2].partition("/")[2] if len(words) > 2 else ""
        if words[:2] == ["add", "server"]:
            if self.refuse_adds:
                self.refuse_adds -= 1
                return "Refused.\n"
            address, _, port = words[3].rpartition(":")
            self.servers[name] = (address.strip("[]"), int(port), 1)
        elif words[:2] == ["enable", "server"] and name in self.servers:
            self.servers[name] = (*self.servers[name][:2], 0)
        elif words[:2] == ["set", "server"] and words[-1] == "maint":
            self.servers[name] = (*self.servers[name][:2], 1)
        elif words[:2] == ["del", "server"] and self.servers.get(name, ("", 0, 0))[2] & 1:
            del self.servers[name]
        return "\n"

    def load(self, config: str) -> None:
        """What a reload does: the servers of the config file, enabled."""
        self.servers = {}
        for line in config.splitlines():
            words = line.split()
            if words[:1] == ["server"]:
                address, _, port = words[2].rpartition(":")
                self.servers[words[1]] = (address.strip("[]"), int(port), 0)


@dataclass
class FakeSystem:
    """Stands in for serf, `haproxy -c`, s6 and HAProxy's admin socket; records what was asked
    of it. A reload makes the fake HAProxy load `config` (unless `failing_reloads` is left)."""

    members_json: str = doc()
    check_result: str | None = None
    clock: float = 1_000.0
    reloads: int = 0
    failing_reloads: int = 0
    checked: list[str] = field(default_factory=list)
    slept: list[float] = field(default_factory=list)
    haproxy: FakeHaproxy = field(default_factory=FakeHaproxy)
    config: Path | None = None
    network: Scope = field(default_factory=Scope)

    def members(self) -> str:
        return self.members_json

    def check(self, path: Path) -> str | None:
        self.checked.append(path.read_text())
        return self.check_result

    def reload(self) -> str | None:
        self.reloads += 1
        if self.failing_reloads:
            self.failing_reloads -= 1
            return "s6-svc: fatal: unable to control"
        if self.config is not None:
            self.haproxy.load(self.config.read_text())
        return None

    def runtime(self, command: str) -> str:
        return self.haproxy(command)

    def scope(self) -> Scope:
        return self.network

    def now(self) -> float:
        return self.clock

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock += seconds


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    """The load balancer's files as the image ships them (the initial config in place)."""
    (tmp_path / "etc").mkdir()
    template = tmp_path / "etc" / "haproxy.cfg.j2"
    template.write_text(TEMPLATE.read_text())
    (tmp_path / "etc" / "haproxy.cfg").write_text((IMAGES / "haproxy" / "haproxy.cfg").read_text())
    return Paths(config=tmp_path / "etc" / "haproxy.cfg", template=template,
                 event_log=tmp_path / "log" / "events.log", state_dir=tmp_path / "run",
                 password_file=tmp_path / "etc" / "stats-password")


# --- parsing and validation ---------------------------------------------------------------

def test_members_null_means_none() -> None:
    assert parse_members('{"members": null}') == []


@pytest.mark.parametrize("text", ["", "[]", '{"members": 3}', "not json"])
def test_members_garbage_is_an_error(text: str) -> None:
    with pytest.raises(MembersError):
        parse_members(text)


@pytest.mark.parametrize("name", ["web-1", "a", "lk-demo-web-3f2a1b-0c9e1d", "A1"])
def test_plain_hostnames_are_valid(name: str) -> None:
    assert valid_name(name)


@pytest.mark.parametrize("name", [
    "", "-web", "web-", "web_1", "web.1", "web 1", "web\n    server evil 10.0.0.1:80",
    "web\r", "x" * 64, "wéb", "web;", 'web"', "${HOME}", None, 42,
])
def test_anything_else_is_not_a_name(name: object) -> None:
    assert not valid_name(name)


@pytest.mark.parametrize(("addr", "ip"), [
    ("172.18.0.5:7946", "172.18.0.5"), ("172.18.0.5", "172.18.0.5"),
    ("[fd00::5]:7946", "fd00::5"), ("fd00::5", "fd00::5"),
])
def test_addresses(addr: str, ip: str) -> None:
    assert parse_address(addr) == ip


@pytest.mark.parametrize("addr", [
    "", "web:7946", "172.18.0.500:7946", "172.18.0.5\n:80", "0.0.0.0:7946", "1.2.3.4:80 backup",
    "224.0.0.1:7946", None, 7946, "[fd00::5:7946",
    # an IPv6 zone id is free text that ipaddress accepts, newlines included
    "fe80::1%eth0", "[fe80::1%x\n    server evil 6.6.6.6:80 #]:7946",
    "fe80::1%x\n server e 1.1.1.1",
])
def test_bad_addresses(addr: object) -> None:
    assert parse_address(addr) is None


def test_select_keeps_alive_web_members_sorted_and_rejects_hostile_ones() -> None:
    members = [
        member("web-b", "172.18.0.6:7946"),
        member("web-a", "172.18.0.5:7946", port="3000"),
        member("lb-1", "172.18.0.2:7946", role="lb"),
        member("web-gone", "172.18.0.9:7946", status="left"),
        member("evil\n    server x 10.0.0.1:80", "172.18.0.7:7946"),
        member("web-c", "172.18.0.8:7946", port="80\n    server y 10.0.0.2:80"),
        member("web-d", "not-an-ip:7946"),
        member("web-e", "172.18.0.10:7946", port="99999"),
        member("web-a", "172.18.0.11:7946"),
    ]
    result = select_backends(members)
    assert result.backends == (Backend("web-a", "172.18.0.5", 3000),
                               Backend("web-b", "172.18.0.6", 3000))
    assert len(result.rejected) == 5
    assert all("\n" not in r.name for r in result.rejected)


# --- rendering ------------------------------------------------------------------------------

def test_empty_render_is_the_shipped_initial_config() -> None:
    assert render(TEMPLATE.read_text(), ()) == (IMAGES / "haproxy" / "haproxy.cfg").read_text()


def test_render_has_one_server_line_per_backend() -> None:
    text = render(TEMPLATE.read_text(), (Backend("web-a", "172.18.0.5", 3000),
                                         Backend("web-b", "fd00::6", 3001)))
    servers = [ln.split() for ln in text.splitlines() if ln.strip().startswith("server ")]
    # the same options as a server added through the runtime API (no default-server there)
    options = SERVER_OPTIONS.split()
    assert servers == [["server", "web-a", "172.18.0.5:3000", *options],
                       ["server", "web-b", "[fd00::6]:3001", *options]]


def test_render_carries_the_settings_the_issue_asks_for() -> None:
    text = render(TEMPLATE.read_text(), ())
    for setting in ("master-worker", "hard-stop-after", "option idle-close-on-response",
                    "option redispatch", "retries", "timeout check", "option httpchk",
                    "stats auth admin:", "load-server-state-from-file"):
        assert setting in text


# --- reconcile: live changes, reloads, verification -------------------------------------------

def served(system: FakeSystem) -> dict[str, tuple[str, int]]:
    return {n: (a, p) for n, (a, p, _) in system.haproxy.servers.items()}


def test_a_join_goes_in_live_and_no_change_changes_nothing(paths: Paths) -> None:
    system = FakeSystem(doc(member("web-a")), config=paths.config)
    outcome = reconcile(paths, system, Settings())
    assert outcome.action == "runtime"
    assert outcome.details["added"] == "web-a"
    assert "server web-a 172.18.0.5:3000 check" in paths.config.read_text()
    assert served(system) == {"web-a": ("172.18.0.5", 3000)}
    assert system.haproxy.servers["web-a"][2] == 0  # enabled, not left in maintenance
    assert "enable health webapps/web-a" in system.haproxy.commands
    system.clock += 60
    assert reconcile(paths, system, Settings()).action == "unchanged"
    assert system.reloads == 0
    assert len(system.checked) == 1


def test_a_leave_is_put_in_maintenance_then_deleted(paths: Paths) -> None:
    system = FakeSystem(doc(member("web-a"), member("web-b", "172.18.0.6:7946")),
                        config=paths.config)
    reconcile(paths, system, Settings())
    system.members_json = doc(member("web-a"), member("web-b", "172.18.0.6:7946", status="left"))
    outcome = reconcile(paths, system, Settings())
    assert (outcome.action, outcome.details["removed"]) == ("runtime", "web-b")
    commands = system.haproxy.commands
    assert commands.index("set server webapps/web-b state maint") < commands.index(
        "del server webapps/web-b")
    assert served(system) == {"web-a": ("172.18.0.5", 3000)}
    assert "web-b" not in paths.config.read_text()
    assert system.reloads == 0


def test_haproxy_running_an_old_list_is_corrected_though_the_file_is_current(
        paths: Paths) -> None:
    """The file says web-a, HAProxy lost it (a reload that did not take): not 'unchanged'."""
    system = FakeSystem(doc(member("web-a")), config=paths.config)
    reconcile(paths, system, Settings())
    system.haproxy.servers.clear()
    assert reconcile(paths, system, Settings()).action == "runtime"
    assert served(system) == {"web-a": ("172.18.0.5", 3000)}


def test_a_refused_runtime_change_is_retried(paths: Paths) -> None:
    system = FakeSystem(doc(member("web-a")), config=paths.config)
    system.haproxy.refuse_adds = 1
    outcome = reconcile(paths, system, Settings())
    assert (outcome.action, outcome.details["attempts"]) == ("runtime", "2")
    assert served(system) == {"web-a": ("172.18.0.5", 3000)}
    assert system.slept == [handler.RETRY_DELAYS[0]]


def test_a_runtime_api_that_keeps_refusing_falls_back_to_a_reload(paths: Paths) -> None:
    system = FakeSystem(doc(member("web-a")), config=paths.config)
    system.haproxy.refuse_adds = 99
    outcome = reconcile(paths, system, Settings())
    assert outcome.action == "reload"
    assert "runtime API did not take the change" in outcome.reason
    assert system.reloads == 1
    assert served(system) == {"web-a": ("172.18.0.5", 3000)}


def test_a_failed_reload_is_retried_until_haproxy_serves_the_config(paths: Paths) -> None:
    template = paths.template.read_text().replace("retries 3", "retries 2")
    paths.template.write_text(template)  # a global setting changed: only a reload does it
    system = FakeSystem(doc(member("web-a")), config=paths.config, failing_reloads=1)
    outcome = reconcile(paths, system, Settings())
    assert (outcome.action, outcome.details["attempts"]) == ("reload", "2")
    assert "template or a global setting changed" in outcome.reason
    assert system.reloads == 2
    assert served(system) == {"web-a": ("172.18.0.5", 3000)}


def test_reloads_that_never_take_end_in_an_error_outcome(paths: Paths) -> None:
    paths.template.write_text(paths.template.read_text().replace("retries 3", "retries 2"))
    system = FakeSystem(doc(member("web-a")), config=paths.config, failing_reloads=99)
    outcome = reconcile(paths, system, Settings())
    assert outcome.action == "error"
    assert system.reloads == len(handler.RELOAD_RETRY_DELAYS)


def test_haproxy_not_answering_gets_the_file_it_will_start_from(paths: Paths) -> None:
    system = FakeSystem(doc(member("web-a")), config=paths.config)
    system.haproxy.down = True
    assert reconcile(paths, system, Settings()).action == "written"
    assert "server web-a " in paths.config.read_text()
    assert system.reloads == 0


def test_an_agent_that_knows_no_web_member_yet_keeps_the_servers(paths: Paths) -> None:
    """After the load balancer's Serf restarts it knows nobody until it rejoins: no 503s."""
    system = FakeSystem(doc(member("web-a"), member("web-b", "172.18.0.6:7946")),
                        config=paths.config)
    reconcile(paths, system, Settings())
    system.members_json = doc(member("lb-1", "172.18.0.2:7946", role="lb"))
    outcome = reconcile(paths, system, Settings())
    assert outcome.action == "kept"
    assert set(served(system)) == {"web-a", "web-b"}
    # every web app gone for real (left or failed members still known): zero servers it is
    system.members_json = doc(member("web-a", status="left"),
                              member("web-b", "172.18.0.6:7946", status="failed"))
    assert reconcile(paths, system, Settings()).action == "runtime"
    assert served(system) == {}


def test_empty_members_render_a_valid_config_without_servers(paths: Paths) -> None:
    paths.config.write_text("old\n")
    system = FakeSystem('{"members": null}', config=paths.config)
    outcome = reconcile(paths, system, Settings())
    assert outcome.action == "reload"
    assert outcome.backends == ()
    lines = paths.config.read_text().splitlines()
    assert not [ln for ln in lines if ln.strip().startswith("server ")]


def test_invalid_render_keeps_the_running_config(paths: Paths) -> None:
    paths.config.write_text("running\n")
    system = FakeSystem(doc(member("web-a")), check_result="[ALERT] parsing error")
    outcome = reconcile(paths, system, Settings())
    assert outcome.action == "invalid"
    assert "parsing error" in outcome.reason
    assert paths.config.read_text() == "running\n"
    assert system.reloads == 0
    assert system.haproxy.servers == {}
    assert list(paths.config.parent.glob(".*")) == []  # no candidate left behind


def test_unreadable_members_change_nothing(paths: Paths) -> None:
    paths.config.write_text("running\n")
    outcome = reconcile(paths, FakeSystem("garbage"), Settings())
    assert outcome.action == "error"
    assert paths.config.read_text() == "running\n"


def test_hostile_member_never_reaches_the_config(paths: Paths) -> None:
    hostile = "x\n    server evil 10.9.9.9:80\nlisten y"
    system = FakeSystem(doc(member("web-a"), member(hostile, "172.18.0.9:7946")))
    outcome = reconcile(paths, system, Settings())
    text = paths.config.read_text()
    assert "evil" not in text
    assert "10.9.9.9" not in text
    assert "172.18.0.9" not in text
    assert outcome.backends == ("web-a",)
    assert len(outcome.rejected) == 1


class JoiningSystem(FakeSystem):
    """Members join on a schedule; `members()` answers with those joined by the fake clock."""

    def __init__(self, joins: list[float]) -> None:
        super().__init__()
        self.joins = joins

    def members(self) -> str:
        return doc(*(member(f"web-{i}", f"172.18.0.{10 + i}:7946")
                     for i, at in enumerate(self.joins) if at <= self.clock))


def test_a_burst_of_joins_costs_no_reload(paths: Paths) -> None:
    """Ten joins 250 ms apart, an event each (handlers run one at a time): all live."""
    system = JoiningSystem([1_000.0 + 0.25 * i for i in range(10)])
    for at in system.joins:
        system.clock = max(system.clock, at)  # the event is handled once the previous one ends
        reconcile(paths, system, Settings())
    assert system.reloads == 0
    assert len(served(system)) == 10
    assert "web-9" in paths.config.read_text()  # the last join made it in


def test_reload_gap_widens_in_a_burst() -> None:
    assert handler.reload_gap(1) == handler.MIN_RELOAD_INTERVAL
    assert handler.reload_gap(4) == handler.BURST_RELOAD_INTERVAL


def test_live_changes_do_not_wait_for_the_reload_gap(paths: Paths) -> None:
    system = FakeSystem(doc(member("web-a")), config=paths.config)
    paths.state_dir.mkdir()
    paths.last_reload.write_text(f"{system.clock - 0.3:.3f} 1\n")
    assert reconcile(paths, system, Settings()).action == "runtime"
    assert system.slept == []


def test_server_names_of_a_config() -> None:
    text = render(TEMPLATE.read_text(), (Backend("web-a", "172.18.0.5", 3000),))
    assert handler.server_names(text) == {"web-a"}
    assert handler.server_names(None) == set()


def test_handle_appends_events_and_outcomes(paths: Paths) -> None:
    system = FakeSystem(doc(member("web-a")))
    handle("member-join", "web-a\t172.18.0.5\tweb\trole=web\n", paths, system, Settings())
    handle("member-leave", "evil\nname", paths, system, Settings())
    records = [json.loads(ln) for ln in paths.event_log.read_text().splitlines()]
    assert [(r["kind"], r["event"]) for r in records] == [
        ("event", "member-join"), ("outcome", "member-join"),
        ("event", "member-leave"), ("outcome", "member-leave")]
    assert [r["action"] for r in records if r["kind"] == "outcome"] == ["runtime", "unchanged"]
    assert records[1]["added"] == "web-a"


def test_stats_password_must_be_well_formed(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("abcdefghijklmnop_-\n")
    assert stats_password(path) == "abcdefghijklmnop_-"
    path.write_text('short"\n')
    assert stats_password(path) is None
    assert stats_password(tmp_path / "missing") is None


def test_a_hold_defers_reloads_until_released_or_expired(paths: Paths) -> None:
    system = FakeSystem(doc(member("web-a")))
    handler.hold(paths, system, 20)
    assert reconcile(paths, system, Settings()).action == "held"
    assert system.reloads == 0
    paths.hold.unlink()  # --release
    assert reconcile(paths, system, Settings()).action == "runtime"
    handler.hold(paths, system, 999)  # bounded
    system.clock += handler.MAX_HOLD + 0.1
    system.members_json = doc(member("web-a"), member("web-b", "172.18.0.6:7946"))
    assert reconcile(paths, system, Settings()).action == "runtime"
