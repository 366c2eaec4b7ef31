"""Three Docker engines in containers, joined in one swarm, on a network this harness creates.

The machine's own engine stays out of swarm mode (other tests share it): every swarm call goes
to the inner engines, over plain HTTP on the harness's own network (tcp://<node ip>:2375).
The harness drives the outer engine with the docker command line, as a user setting up a lab
would; layerkit's code under test talks to the inner manager through its SDK.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

NODE_DOCKERFILE = """\
FROM {base}
RUN set -eux; apt-get update; \\
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
        docker.io iptables iproute2; \\
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
ENTRYPOINT []
"""
REGISTRY_DOCKERFILE = """\
FROM {base}
RUN set -eux; apt-get update; \\
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry; \\
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \\
    printf '%s\\n' 'version: 0.1' 'storage:' '  filesystem:' \\
        '    rootdirectory: /var/lib/docker-registry' 'http:' '  addr: :5000' \\
        > /etc/docker/registry/config.yml
ENTRYPOINT []
CMD ["docker-registry", "serve", "/etc/docker/registry/config.yml"]
"""
# --privileged is refused on this machine (no CAP_SYS_RESOURCE in the bounding set)
NODE_FLAGS = ("--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
              "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
              "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run",
              "--mount", "type=volume,dst=/var/lib/docker")
DOCKERD = ("dockerd", "--host=unix:///var/run/docker.sock", "--host=tcp://0.0.0.0:2375",
           "--tls=false")
TEST_LABEL = "org.layerkit.test"


def docker(*args: str, stdin: bytes | None = None, timeout: float = 300,
           check: bool = True) -> str:
    done = subprocess.run(["docker", *args], input=stdin, capture_output=True,
                          timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}: {done.stderr.decode()[-800:]}")
    return done.stdout.decode()


@dataclass(frozen=True)
class Node:
    name: str      # the outer container's name
    address: str   # its address on the harness network

    @property
    def docker_host(self) -> str:
        return f"tcp://{self.address}:2375"

    def run(self, *args: str, stdin: bytes | None = None, timeout: float = 120,
            check: bool = True) -> str:
        """A command inside the node (its own docker CLI talks to its inner engine)."""
        return docker("exec", "-i", self.name, *args, stdin=stdin, timeout=timeout, check=check)


@dataclass(frozen=True)
class Harness:
    tag: str
    network: str
    subnet: ipaddress.IPv4Network
    nodes: tuple[Node, ...]

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    def free_address(self, taken: int = 0) -> str:
        """An address of the harness subnet held by nobody: near its top, away from the
        engine's allocations (which start at the bottom)."""
        return str(self.subnet.broadcast_address - 10 - taken)

    def node_of(self, hostname: str) -> Node:
        return next(n for n in self.nodes if n.name.endswith(hostname) or n.name == hostname)


def built(kind: str, dockerfile: str, base: str) -> str:
    """A test image from an inline Dockerfile on our base, named by the text's hash."""
    text = dockerfile.format(base=base)
    tag = f"layerkit-test/{kind}:{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    if not docker("images", "-q", tag).strip():
        with tempfile.TemporaryDirectory() as ctx:
            (Path(ctx) / "Dockerfile").write_text(text)
            subprocess.run(["docker", "build", "-q", "-t", tag, ctx], check=True,
                           capture_output=True, timeout=900,
                           env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/bin:/bin"})
    return tag


def _wait_engine(node: Node, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.run("docker", "version", "-f", "{{.Server.Version}}", check=False).strip():
            return
        time.sleep(0.5)
    raise RuntimeError(f"the engine in {node.name} did not start: "
                       f"{docker('logs', '--tail', '20', node.name, check=False)}")


def load_images(nodes: Sequence[Node], images: Sequence[str]) -> None:
    """One save, loaded into every node at once (docker save | docker exec -i NODE docker load)."""
    with tempfile.NamedTemporaryFile(suffix=".tar") as tar:
        subprocess.run(["docker", "save", "-o", tar.name, *images], check=True, timeout=600)
        data = Path(tar.name).read_bytes()
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(lambda n: n.run("docker", "load", "-q", stdin=data, timeout=600), nodes))


def _join(nodes: Sequence[Node]) -> None:
    """Every node a manager: two of three keep the swarm's quorum when a test kills one."""
    first = nodes[0]
    first.run("docker", "swarm", "init", "--advertise-addr", first.address)
    token = first.run("docker", "swarm", "join-token", "-q", "manager").strip()
    for node in nodes[1:]:
        node.run("docker", "swarm", "join", "--advertise-addr", node.address, "--token", token,
                 f"{first.address}:2377")


@contextlib.contextmanager
def swarm_harness(images: Sequence[str], base: str, count: int = 3) -> Iterator[Harness]:
    tag = f"lksw-{secrets.token_hex(3)}"
    image = built("swarm-node", NODE_DOCKERFILE, base)
    try:
        docker("network", "create", "--label", f"{TEST_LABEL}={tag}", tag)
        info = json.loads(docker("network", "inspect", tag))[0]
        subnet = ipaddress.IPv4Network(info["IPAM"]["Config"][0]["Subnet"])
        names = [f"{tag}-n{i + 1}" for i in range(count)]
        for name in names:
            # plain HTTP to the harness's registry (tests/swarm/conftest.py) on this network
            docker("run", "-d", "--name", name, "--hostname", name, "--network", tag,
                   "--label", f"{TEST_LABEL}={tag}", *NODE_FLAGS, image, *DOCKERD,
                   f"--insecure-registry={subnet}")
        nodes = tuple(Node(name, docker("inspect", "-f",
                                        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                                        name).strip()) for name in names)
        for node in nodes:
            _wait_engine(node)
        load_images(nodes, images)
        _join(nodes)
        yield Harness(tag, tag, subnet, nodes)
    finally:
        cleanup(tag)


def start_registry(harness: Harness, base: str) -> str:
    """Debian's docker-registry in a container on the harness network: its HOST:PORT."""
    image = built("registry", REGISTRY_DOCKERFILE, base)
    name = f"{harness.tag}-registry"
    docker("run", "-d", "--name", name, "--network", harness.network,
           "--label", f"{TEST_LABEL}={harness.tag}", image)
    address = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                     name).strip()
    return f"{address}:5000"


def cleanup(tag: str) -> None:
    ids = docker("ps", "-aq", "--filter", f"label={TEST_LABEL}={tag}", check=False).split()
    if ids:
        docker("rm", "-f", "-v", *ids, check=False, timeout=120)
    docker("network", "rm", tag, check=False)
