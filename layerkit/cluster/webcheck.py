"""Whether an image can be the cluster's web app, found out before the cluster changes.

A web app is any image built on the shared base: s6-svscan as PID 1, the Serf agent's service
beside the app, and the app answering HTTP on its port. The check creates one container of the
image with no network but loopback, looks for the agent's files, starts it and asks for the
health path from inside (the only traffic is to 127.0.0.1 in that container), then removes it.
An image that lacks the agent, runs something else as PID 1, stops, answers a redirect or a 4xx,
listens on the loopback only, or never answers 200 is refused with the reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from dataclasses import replace

from layerkit.cluster.launch import web_env
from layerkit.cluster.options import ClusterOptions, labels
from layerkit.engine.client import DockerClient
from layerkit.engine.containers import (
    ContainerSpec,
    create_container,
    exec_in,
    get_file,
    inspect_container,
    remove_container,
    start_container,
)
from layerkit.engine.images import ImageInfo, find_image, pull_image
from layerkit.engine.logs import container_logs
from layerkit.errors import EngineError, NotFound, UsageError

logger = logging.getLogger(__name__)

CHECK_SECONDS = 30.0  # how long an app may take to answer its first health check
AGENT_FILES = ("/etc/services.d/serf/run", "/opt/layerkit/layerkit/agent/serfagent.py")
SUPERVISOR = "s6-svscan"
BASE_HINT = 'build it on the shared base (parent = "base" in its images/<name>/image.toml)'
PID1_HINT = ("keep the base's CMD (s6-svscan) and run the app as an s6 service (services = "
             "[...] in its spec), not as its cmd")
LOOPBACK6 = "00000000000000000000000001000000"  # ::1 as /proc/net/tcp6 writes it
LOOPBACK_HINT = "make the app listen on all addresses (0.0.0.0), not on 127.0.0.1"
ANSWER_HINT = ("give the port it listens on with --web-port and a path that answers 200 "
               "with --health")
# run inside the checked container: PID 1's name, the health path's status and the addresses
# listening on the port, as JSON
_PROBE = """
import http.client, json, sys
port = int(sys.argv[1])
out = {"pid1": open("/proc/1/comm").read().strip(), "listen": []}
try:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    conn.request("GET", sys.argv[2])
    out["status"] = conn.getresponse().status
except (OSError, http.client.HTTPException) as exc:
    out["error"] = str(exc) or type(exc).__name__
# read after the request: once it was answered, the listening socket is there to be seen
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        rows = open(table).read().splitlines()[1:]
    except OSError:
        continue
    for row in rows:
        local, state = row.split()[1], row.split()[3]
        if state == "0A" and int(local.rpartition(":")[2], 16) == port:
            out["listen"].append(local.rpartition(":")[0])
print(json.dumps(out))
"""


def find_web_image(client: DockerClient, ref: str, default: str) -> ImageInfo | None:
    """The web image as the engine has it. A user's own (any but `default`, which `layerkit
    build` makes) that the engine lacks is pulled from its registry; one that cannot be is
    NotFound."""
    image = find_image(client, ref)
    if image is not None or ref == default:
        return image
    image = pull_image(client, ref)
    if image is None:
        raise NotFound(f"image {ref} is not in the engine and could not be pulled",
                       hint="build it (`layerkit build NAME`), or check its name and that "
                            "its registry answers (`--verbose` says why the pull failed)")
    return image


def web_port_of(image: ImageInfo, ref: str, given: int) -> int:
    """`given`, else the port the image declares: its WEBAPP_PORT, else its one exposed port."""
    if given:
        return given
    env = dict(item.partition("=")[::2] for item in image.env)
    raw = env.get("WEBAPP_PORT", "")
    if raw.isascii() and raw.isdigit() and 0 < int(raw) < 65536:
        return int(raw)
    tcp = sorted(int(p.split("/")[0]) for p in image.exposed if p.endswith("/tcp"))
    if len(tcp) == 1:
        return tcp[0]
    declared = f"exposes {', '.join(map(str, tcp))}" if tcp else "declares no port"
    raise UsageError(f"image {ref} {declared}: which one is the web app's?",
                     hint="give it with --web-port")


def check_web_image(client: DockerClient, opts: ClusterOptions, image: ImageInfo, *,
                    timeout: float = CHECK_SECONDS) -> int:
    """Refuse `opts.web_image` (UsageError) unless it can be a web member; its port (the one
    given, else the one `image`, its inspect, declares)."""
    ref = opts.web_image
    spec = ContainerSpec(
        image=ref, name=f"layerkit-{opts.name}-check-{secrets.token_hex(3)}",
        hostname=f"{opts.name}-check", network="none", aliases=(),
        labels=labels(opts.name, "check"), env=web_env(opts), ports={}, restart="no",
        memory=opts.memory, pids=opts.pids, log_size=opts.log_size, log_files=opts.log_files)
    started = time.monotonic()
    container = create_container(client, spec)
    try:
        for path in AGENT_FILES:
            try:
                get_file(client, container.id, path)
            except NotFound:
                raise UsageError(f"image {ref} has no layerkit agent ({path} is missing)",
                                 hint=BASE_HINT) from None
        opts = replace(opts, web_port=web_port_of(image, ref, opts.web_port))
        start_container(client, container.id)
        seconds = _wait_for_answer(client, container.id, opts, timeout)
    finally:
        with contextlib.suppress(EngineError, NotFound):
            remove_container(client, container.id)
    logger.debug("web image %s answered GET %s on port %d after %.2f s (check: %.2f s)",
                 ref, opts.health, opts.web_port, seconds, time.monotonic() - started)
    return opts.web_port


def _wait_for_answer(client: DockerClient, ref: str, opts: ClusterOptions,
                     timeout: float) -> float:
    started = time.monotonic()
    image, asked = opts.web_image, f"GET {opts.health} on port {opts.web_port}"
    last = "no answer"
    while True:
        answer = _probe(client, ref, opts)
        if answer is None:
            raise UsageError(f"image {image} stopped before it answered {asked}",
                             hint=_log_hint(client, ref))
        if answer.get("pid1", SUPERVISOR) != SUPERVISOR:
            raise UsageError(f"image {image} runs {answer['pid1']!r} as PID 1, not "
                             f"{SUPERVISOR}: its Serf agent would never start", hint=PID1_HINT)
        status = answer.get("status")
        if status == 200:
            _refuse_loopback_only(image, opts.web_port, answer.get("listen"))
            return time.monotonic() - started
        if isinstance(status, int) and 300 <= status < 500 and status not in (408, 429):
            raise UsageError(f"image {image} answered {status} to {asked} (HAProxy counts "
                             "only 200 as healthy and follows no redirect)", hint=ANSWER_HINT)
        last = f"answered {status}" if status is not None else str(answer.get("error", last))
        if time.monotonic() - started >= timeout:
            raise UsageError(f"image {image}: {asked} got no 200 within {timeout:g} s "
                             f"(last: {last})", hint=f"{ANSWER_HINT}; {_log_hint(client, ref)}")
        time.sleep(0.5)


def _refuse_loopback_only(image: str, port: int, listen: object) -> None:
    """An app that listens on the loopback only answers the check from inside, but never
    HAProxy, which reaches it on the cluster's network (/proc/net/tcp{,6} addresses, hex)."""
    addresses = [a for a in listen if isinstance(a, str)] if isinstance(listen, list) else []
    if addresses and all(a.endswith("7F") or a == LOOPBACK6 for a in addresses):
        raise UsageError(f"image {image} listens on port {port} on the loopback only: HAProxy "
                         "reaches it on the cluster's network", hint=LOOPBACK_HINT)


def _log_hint(client: DockerClient, ref: str) -> str:
    """The last line the checked container logged (s6 passes its services' output on)."""
    try:
        text = b"".join(container_logs(client, ref)).decode(errors="replace")
    except (EngineError, NotFound):
        return "its log could not be read"
    lines = [said for line in text.splitlines() if (said := line.partition(" ")[2].strip())]
    if not lines:
        return "it logged nothing"
    printable = "".join(c if c.isprintable() else "?" for c in lines[-1][:160])
    return f"its log ends: {printable}"


def _probe(client: DockerClient, ref: str, opts: ClusterOptions) -> dict[str, object] | None:
    """One look from inside the container; None once it is no longer running."""
    try:
        code, output = exec_in(client, ref, ["python3", "-c", _PROBE, str(opts.web_port),
                                             opts.health], user="root")
    except (EngineError, NotFound):  # 409, or the exec lost: did the container stop?
        if not inspect_container(client, ref).running:
            return None
        raise
    try:
        answer = json.loads(output.strip().splitlines()[-1]) if code == 0 else None
    except (ValueError, IndexError):
        answer = None
    if not isinstance(answer, dict):
        raise UsageError(f"image {opts.web_image} cannot run the check's python3 "
                         f"(exit {code}): {output.strip()[:120]!r}", hint=BASE_HINT)
    return answer
