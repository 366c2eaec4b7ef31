"""The load balancer's Serf event handler: membership into HAProxy, without reloads.

Serf runs it (one at a time) on member-join, -leave, -failed, -update and -reap; the lbwatch
service (watch.py) runs the same step ahead of Serf's coalescing and every few seconds. It never
trusts the event's payload: it reads the members, validates them (members.py: names, tags, an
address inside the cluster's network), renders the template and checks it with `haproxy -c`.
When only the server lines differ, the change goes through HAProxy's runtime API (runtime.py)
and haproxy.cfg is rewritten to match, so a restart starts with the same servers; a change of
the template or a global setting, or a runtime change that does not take, reloads the
master-worker instead. Every change is verified by reading HAProxy's servers back and retried
with backoff; while the local Serf agent knows no web member at all (it has just restarted and
not rejoined), the servers are kept rather than dropped to zero. Every event and its outcome is
appended to the event log as one JSON line (rotated by size).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import jinja2

from .lbsystem import LbSystem
from .members import (
    DEFAULT_HEALTH,
    Backend,
    MembersError,
    Scope,
    health_problem,
    parse_members,
    select_backends,
)
from .runtime import SERVER_OPTIONS, RuntimeApi, Server, differs

MIN_RELOAD_INTERVAL = 1.0  # seconds between two reloads; later events wait and batch up
BURST_RELOAD_INTERVAL = 2.0  # ... after a reload that changed several servers (a burst is on)
MAX_PAYLOAD = 64 * 1024    # bytes of the event's stdin kept for the log
MAX_HOLD = 30.0            # seconds `layerkit up/scale` may hold reloads while it starts a batch
RETRY_DELAYS = (0.2, 0.5, 1.0)         # between attempts of a runtime change
RELOAD_RETRY_DELAYS = (1.0, 2.0, 4.0)  # between reload attempts
RELOAD_SETTLE = 5.0        # seconds a new worker gets to report the wanted servers
MAX_EVENT_LOG = 4 * 1024 * 1024  # bytes; then events.log becomes events.log.1 (one kept)


@dataclass(frozen=True)
class Paths:
    config: Path = Path("/etc/haproxy/haproxy.cfg")
    template: Path = Path("/etc/layerkit/haproxy.cfg.j2")
    event_log: Path = Path("/var/log/layerkit/events.log")
    state_dir: Path = Path("/run/layerkit")
    password_file: Path = Path("/etc/layerkit/stats-password")

    @property
    def lock(self) -> Path:
        return self.state_dir / "handler.lock"

    @property
    def last_reload(self) -> Path:
        return self.state_dir / "last-reload"

    @property
    def hold(self) -> Path:
        return self.state_dir / "hold-until"


@dataclass(frozen=True)
class Settings:
    """What the template is rendered with besides the members."""

    http: int = 80
    stats: int = 8404
    health: str = DEFAULT_HEALTH  # the web apps' health-check path (LAYERKIT_HEALTH_PATH)


def settings_from(env: Mapping[str, str]) -> Settings:
    """The load balancer's settings from its environment; a health path that is not valid is
    refused (ValueError), never written into the config."""
    health = env.get("LAYERKIT_HEALTH_PATH") or DEFAULT_HEALTH
    problem = health_problem(health)
    if problem:
        raise ValueError(f"LAYERKIT_HEALTH_PATH {health[:80]!r} {problem}")
    return Settings(health=health)


class System(Protocol):
    """What the handler does to the world outside its files; a fake stands in for unit tests."""

    def members(self) -> str: ...

    def check(self, path: Path) -> str | None: ...  # None when valid, else the reason

    def reload(self) -> str | None: ...  # None when signalled, else the reason

    def runtime(self, command: str) -> str: ...  # HAProxy's answer; OSError if it has none

    def scope(self) -> Scope: ...  # where backends may be

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class Outcome:
    action: str  # runtime | reload | unchanged | written | kept | held | invalid | error
    backends: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()
    reason: str = ""
    details: dict[str, str] = field(default_factory=dict)


def render(template_text: str, backends: tuple[Backend, ...], settings: Settings = Settings()
           ) -> str:
    # an HAProxy config, not HTML: safety comes from members.py validating every value
    env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined,  # noqa: S701
                             keep_trailing_newline=True)
    text = env.from_string(template_text).render(
        backends=backends, http_port=settings.http, stats_port=settings.stats,
        health_path=settings.health, server_options=SERVER_OPTIONS)
    return text if text.endswith("\n") else text + "\n"


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def reload_gap(changed: int) -> float:
    """Seconds to keep after a reload that added or removed `changed` servers.

    A single change is usually alone (one join, one leave): the next one may follow soon. A
    reload that changed several servers is part of a burst: hold the next one longer so the
    rest of the burst lands in it.
    """
    return BURST_RELOAD_INTERVAL if changed > 1 else MIN_RELOAD_INTERVAL


def _last_reload(paths: Paths) -> tuple[float, int] | None:
    try:
        when, changed = paths.last_reload.read_text().split()
        return float(when), int(changed)
    except (OSError, ValueError):
        return None


def _wait_for_interval(paths: Paths, system: System) -> None:
    """Sleep until the reload gap has passed since the last reload (events batch up)."""
    last = _last_reload(paths)
    if last is None:
        return
    gap = reload_gap(last[1])
    remaining = gap - (system.now() - last[0])
    if 0 < remaining <= gap:
        system.sleep(remaining)


def server_names(config: str | None) -> set[str]:
    """The server names of a rendered config (lines `server <name> <addr> ...`)."""
    names = set()
    for line in (config or "").splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "server":
            names.add(words[1])
    return names


def hold(paths: Paths, system: System, seconds: float) -> None:
    """Defer reloads while `layerkit up/scale` starts a batch of web apps (bounded)."""
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    until = system.now() + min(max(seconds, 0.0), MAX_HOLD)
    paths.hold.write_text(f"{until:.3f}\n")


def held_for(paths: Paths, system: System) -> float:
    """Seconds left of a hold; 0 when none is on (or it is malformed)."""
    try:
        until = float(paths.hold.read_text())
    except (OSError, ValueError):
        return 0.0
    return max(0.0, min(until - system.now(), MAX_HOLD))


def reconcile(paths: Paths, system: System, settings: Settings) -> Outcome:
    """Bring HAProxy and haproxy.cfg in line with the alive web members."""
    left = held_for(paths, system)
    if left > 0:
        return Outcome("held", reason=f"a batch is starting; reconciled at its end "
                                      f"(at most {left:.1f} s)")
    api = RuntimeApi(system.runtime, system.sleep)
    try:
        raw = parse_members(system.members())
    except (MembersError, OSError) as exc:
        return Outcome("error", reason=f"cannot read members: {exc}")
    live = _live_servers(api)
    membership = select_backends(raw, scope=system.scope(),
                                 incumbents={n: s.address for n, s in (live or {}).items()})
    names = tuple(b.name for b in membership.backends)
    rejected = tuple(f"{r.name}: {r.reason}" for r in membership.rejected)
    current = _current(paths.config)
    if not names and membership.known_web == 0 and (live or server_names(current)):
        return Outcome("kept", names, rejected,
                       "the local Serf agent knows no web member yet (just restarted?): "
                       "the servers stay until it has rejoined")
    try:
        text = render(paths.template.read_text(encoding="utf-8"), membership.backends, settings)
    except (OSError, jinja2.TemplateError) as exc:
        return Outcome("invalid", names, rejected, f"cannot render the template: {exc}")
    if current == text and live is not None and differs(live, membership.backends) is None:
        return Outcome("unchanged", names, rejected)
    problem = _check(paths, system, text)
    if problem is not None:
        return Outcome("invalid", names, rejected, f"haproxy -c refused the render: {problem}")
    write_atomically(paths.config, text)
    if live is None:
        return Outcome("written", names, rejected,
                       "HAProxy does not answer on its admin socket; it starts from this config")
    if current is not None and frame(current) == frame(text):
        outcome = _runtime(api, system, membership.backends)
        if outcome.action == "runtime":
            return replace(outcome, backends=names, rejected=rejected)
        why = f"the runtime API did not take the change ({outcome.reason}); "
    else:
        why = "the template or a global setting changed; "
    changed = len(server_names(current) ^ set(names))
    done = _reload(paths, system, api, membership.backends, changed=changed)
    return replace(done, backends=names, rejected=rejected, reason=why + done.reason)


def frame(config: str) -> list[str]:
    """A config without its server lines: what only a reload can change."""
    return [ln for ln in config.splitlines() if ln.split()[:1] != ["server"]]


def _live_servers(api: RuntimeApi) -> dict[str, Server] | None:
    try:
        return api.servers()
    except OSError:
        return None


def _current(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _check(paths: Paths, system: System, text: str) -> str | None:
    candidate = paths.config.with_name(f".{paths.config.name}.candidate")
    candidate.write_text(text, encoding="utf-8")
    try:
        return system.check(candidate)
    finally:
        candidate.unlink(missing_ok=True)


def _runtime(api: RuntimeApi, system: System, wanted: tuple[Backend, ...]) -> Outcome:
    """Apply the change through the runtime API, verified, retried with backoff."""
    added: list[str] = []
    removed: list[str] = []
    problem = ""
    for attempt, delay in enumerate(RETRY_DELAYS, start=1):
        try:
            new, gone = api.apply(wanted)
            added += new
            removed += gone
            problem = differs(api.servers(), wanted) or ""
        except OSError as exc:
            problem = f"admin socket: {exc}"
        if not problem:
            return Outcome("runtime", details={"added": ",".join(added),
                                               "removed": ",".join(removed),
                                               "attempts": str(attempt)})
        system.sleep(delay)
    return Outcome("error", reason=problem)


def _reload(paths: Paths, system: System, api: RuntimeApi, wanted: tuple[Backend, ...], *,
            changed: int) -> Outcome:
    """Reload the master-worker and check that the new worker serves `wanted`; retried."""
    _wait_for_interval(paths, system)
    problem = ""
    for attempt, delay in enumerate(RELOAD_RETRY_DELAYS, start=1):
        paths.state_dir.mkdir(parents=True, exist_ok=True)
        paths.last_reload.write_text(f"{system.now():.3f} {changed}\n")
        problem = system.reload() or _settled(api, system, wanted) or ""
        if not problem:
            return Outcome("reload", details={"attempts": str(attempt)})
        system.sleep(delay)
    return Outcome("error", reason=f"config replaced, reload not verified after "
                                   f"{len(RELOAD_RETRY_DELAYS)} attempts: {problem}")


def _settled(api: RuntimeApi, system: System, wanted: tuple[Backend, ...]) -> str | None:
    """None once HAProxy reports the wanted servers (the new worker is up), else why not."""
    problem: str | None = "not asked"
    waited = 0.0
    while waited <= RELOAD_SETTLE:
        try:
            problem = differs(api.servers(), wanted)
        except OSError as exc:
            problem = f"admin socket: {exc}"
        if problem is None:
            return None
        system.sleep(0.25)
        waited += 0.25
    return problem


def append_event(path: Path, record: dict[str, object], max_bytes: int = MAX_EVENT_LOG) -> None:
    """One JSON line per record, appended; past `max_bytes` the log moves to `<name>.1`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if path.stat().st_size >= max_bytes:
            os.replace(path, path.with_name(path.name + ".1"))
    line = json.dumps(record, sort_keys=True, ensure_ascii=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serf runs handlers one at a time; the lock covers a manual run beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def handle(event: str, payload: str, paths: Paths, system: System,
           settings: Settings, *, quiet: tuple[str, ...] = ()) -> Outcome:
    """Log the event, reconcile, log the outcome (neither when the outcome is in `quiet`)."""
    started = system.now()
    record = {"ts": round(started, 3), "kind": "event", "event": event,
              "payload": payload[:MAX_PAYLOAD]}
    if not quiet:
        append_event(paths.event_log, record)
    with locked(paths.lock):
        outcome = reconcile(paths, system, settings)
    if outcome.action in quiet:
        return outcome
    if quiet:
        append_event(paths.event_log, record)
    append_event(paths.event_log, {
        "ts": round(system.now(), 3), "kind": "outcome", "event": event,
        "action": outcome.action, "backends": list(outcome.backends),
        "rejected": list(outcome.rejected), "reason": outcome.reason, **outcome.details,
        "seconds": round(system.now() - started, 3)})
    return outcome


def main() -> int:
    paths = Paths()
    system = LbSystem(paths.password_file)
    try:
        settings = settings_from(os.environ)
    except ValueError as exc:
        print(f"layerkit handler: invalid: {exc}", file=sys.stderr)
        return 1
    # `--hold SECONDS` / `--release`: run by `layerkit up/scale` around a batch of starts
    if sys.argv[1:2] == ["--hold"] and len(sys.argv) == 3:
        hold(paths, system, float(sys.argv[2]))
        return 0
    if sys.argv[1:] == ["--release"]:
        paths.hold.unlink(missing_ok=True)
        return _report(handle("release", "", paths, system, settings))
    event = os.environ.get("SERF_EVENT", "manual")
    if event == "user":
        event = f"user:{os.environ.get('SERF_USER_EVENT', '')}"
    payload = "" if sys.stdin.isatty() else sys.stdin.read(MAX_PAYLOAD)
    return _report(handle(event, payload, paths, system, settings))


def _report(outcome: Outcome) -> int:
    if outcome.action in ("invalid", "error"):
        print(f"layerkit handler: {outcome.action}: {outcome.reason}", file=sys.stderr)
    for line in outcome.rejected:
        print(f"layerkit handler: rejected member {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
