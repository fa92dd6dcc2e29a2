"""``docker/``: the image, the compose network, and the entrypoint that joins a node to it.

No Docker engine runs here, so nothing builds an image or starts a container. What can be checked is:
the Dockerfile and compose.yaml read as files (every path they name exists and reaches the build
context, the final stage has no compiler and runs as a user, the health check is ``sealbox status``, no
port is published, peers mount the file the bootstrap writes its address to), the entrypoint's shell
syntax, its roles with a stand-in ``sealbox`` on PATH, and the entrypoint for real on 127.0.0.1: a
bootstrap and a peer, the peer finding the bootstrap's address through the shared file as in compose.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import LoggedProcess

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
ROOT_DOCKERIGNORE = ROOT / ".dockerignore"  # what the legacy builder (no BuildKit) reads
COMPOSE = DOCKER / "compose.yaml"
ENTRYPOINT = DOCKER / "entrypoint.sh"
VENV_BIN = Path(sys.executable).parent
ADDR_RE = re.compile(r"/ip4/127\.0\.0\.1/tcp/(\d+)/p2p/(\w+)")
PEER_ID = "12D3KooWK8TSVajHV7GxRPHou28Y4Htjs1hoBoPR7ZyLV1oDogTv"
LOG_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0


# -- the Dockerfile, read as text ---------------------------------------------------------------------


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.image}"
        return found[-1]


def dockerfile_stages() -> list[Stage]:
    """The stages of docker/Dockerfile: continuation lines joined, comments dropped, ARGs declared
    before the first FROM substituted into the FROM lines."""
    text = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), " ".join(rest.split())
        if keyword == "ARG" and not stages:
            arg, _, default = rest.partition("=")
            args[arg] = default
        elif keyword == "FROM":
            words = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest).split()
            stages.append(Stage(words[0], words[2] if len(words) == 3 and words[1].upper() == "AS" else None))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for word in shlex.split(args):
            name, _, value = word.partition("=")
            env[name] = value
    return env


def copy_sources(stage: Stage) -> list[tuple[list[str], str]]:
    """Each COPY from the build context: (sources, destination)."""
    out = []
    for args in stage.all("COPY"):
        words = args.split()
        if any(w.startswith("--from=") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        out.append((words[:-1], words[-1]))
    return out


def test_the_image_builds_on_python_311_slim_and_its_final_stage_has_no_compiler() -> None:
    stages = dockerfile_stages()
    assert [s.image for s in stages] == ["python:3.11-slim"] * 2
    build, final = stages
    assert build.name is not None
    # the build stage compiles fastecdsa (sdist only) against GMP; the final one takes the installed venv
    assert any("gcc" in r for r in build.all("RUN"))
    assert any("libgmp-dev" in r for r in build.all("RUN"))
    assert any("pip install ." in r for r in build.all("RUN"))
    assert f"--from={build.name} /opt/sealbox /opt/sealbox" in final.all("COPY")
    for run in final.all("RUN"):
        assert not re.search(r"apt-get|gcc|\bcc\b|\bmake\b|-dev\b", run), run
    # and the final stage proves the venv works there: the daemon's modules (C extensions) import
    assert any('python -c "import node.daemon.main"' in r for r in final.all("RUN"))


def ignore_patterns(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_both_ignore_files_hold_the_same_patterns() -> None:
    """BuildKit reads docker/Dockerfile.dockerignore, the legacy builder (Debian 12's docker.io) only the
    context root's .dockerignore: without it, it sent 148 MB (.git, a .venv, tests) to the daemon."""
    assert ignore_patterns(ROOT_DOCKERIGNORE) == ignore_patterns(DOCKERIGNORE)


def test_the_image_copies_only_paths_that_exist_and_that_its_ignore_file_lets_through() -> None:
    patterns = ignore_patterns(DOCKERIGNORE)
    stages = dockerfile_stages()
    sources = [src for stage in stages for srcs, _dest in copy_sources(stage) for src in srcs]
    assert {"pyproject.toml", "README.md", "protocol", "node", "docker/entrypoint.sh"} <= set(sources)
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"COPY {src}: no such path in the build context (the repo root)"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if "__pycache__" not in p.parts]
        assert files, src
        for file in files:
            rel = file.relative_to(ROOT).as_posix()
            assert not dockerignored(rel, patterns), f"{rel} is COPYed but the ignore file leaves it out"
    # what must stay out of the context: the venv, git, local networks and repos, caches, tests
    for rel in (
        ".venv/bin/python",
        ".git/HEAD",
        "testnet/node-0/identity",
        "sealbox.egg-info/PKG-INFO",
        "tests/system/test_docker.py",
        "node/__pycache__/host.cpython-311.pyc",
        "docker/compose.yaml",
    ):
        assert dockerignored(rel, patterns), f"{rel} would be sent to the builder"


GLOB = {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}


def dockerignored(rel: str, patterns: list[str]) -> bool:
    """Whether .dockerignore ``patterns`` leave ``rel`` out of the build context (the last matching
    pattern wins; a pattern matches a path or any of its parents; ``**`` spans directories)."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        regex = "".join(GLOB.get(tok, re.escape(tok)) for tok in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", body))
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_the_image_runs_the_daemon_as_a_user_on_a_volume_with_a_health_check() -> None:
    final = dockerfile_stages()[-1]
    user = final.last("USER")
    assert user.split(":")[0] not in ("root", "0"), user
    assert any("useradd --system --uid" in r and user in r for r in final.all("RUN"))
    assert any(f"chown {user}:{user} /data /shared" in r for r in final.all("RUN"))

    env = env_of(final)
    assert env["SEALBOX_REPO"] == "/data"
    assert json.loads(final.last("VOLUME")) == ["/data"]
    assert env["SEALBOX_LISTEN"] == "/ip4/0.0.0.0/tcp/4001"
    assert final.last("EXPOSE") == "4001/tcp"
    assert env["PATH"].startswith("/opt/sealbox/bin:")

    entrypoint = json.loads(final.last("ENTRYPOINT"))
    copied = {dest: srcs for srcs, dest in copy_sources(final)}
    (name,) = entrypoint
    assert copied[f"/usr/local/bin/{name}"] == ["docker/entrypoint.sh"]
    assert json.loads(final.last("CMD")) == ["daemon"]

    check = healthcheck_command(final)
    assert check == ["sealbox", "status"]


def healthcheck_command(stage: Stage) -> list[str]:
    options, _, command = stage.last("HEALTHCHECK").partition(" CMD ")
    assert all(o.startswith("--") for o in options.split()), options
    parsed: list[str] = json.loads(command)
    return parsed


# -- compose.yaml ---------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_compose_builds_the_image_from_the_repo_root() -> None:
    assert "name" not in compose(), "Compose v1 refuses a top-level name: the README passes -p sealbox"
    services = compose()["services"]
    assert set(services) == {"bootstrap", "peer"}
    for name, service in services.items():
        build = service["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == ROOT, name
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE, name
        assert service["image"] == "sealbox", name
        assert "container_name" not in service, f"{name}: a fixed name forbids --scale"
        assert service.get("init") is True, name


def test_compose_joins_the_peers_to_the_bootstrap_on_a_private_network() -> None:
    data = compose()
    services = data["services"]
    bootstrap, peer = services["bootstrap"], services["peer"]

    # one internal bridge network; the bootstrap has a fixed address inside its subnet
    (net_name,) = data["networks"]
    net = data["networks"][net_name]
    assert net["internal"] is True
    (subnet_cfg,) = net["ipam"]["config"]
    subnet = ipaddress.ip_network(subnet_cfg["subnet"])
    assert subnet.is_private
    fixed = ipaddress.ip_address(bootstrap["networks"][net_name]["ipv4_address"])
    assert fixed in subnet and fixed not in (subnet.network_address, subnet.broadcast_address)
    assert peer["networks"] == [net_name]

    # nothing published on the Docker host, nothing else open
    for name, service in services.items():
        assert "ports" not in service, f"{name} publishes ports"
        assert "network_mode" not in service, name
        assert service["environment"]["SEALBOX_LISTEN"] == "auto", name

    # roles, and the peers start once the bootstrap's health check passes; --scale peer=N works
    assert bootstrap["command"] == ["bootstrap"]
    assert peer["command"] == ["peer"]
    assert peer["depends_on"] == {"bootstrap": {"condition": "service_healthy"}}
    assert peer["deploy"]["replicas"] >= 1
    assert bootstrap["healthcheck"]["test"] == ["CMD", *healthcheck_command(dockerfile_stages()[-1])]

    # the address file: the bootstrap writes it into a volume the peers mount read-only, at the path
    # the image tells the entrypoint (SEALBOX_BOOTSTRAP_FILE)
    shared_dir = str(Path(env_of(dockerfile_stages()[-1])["SEALBOX_BOOTSTRAP_FILE"]).parent)
    mounts = {name: [v.split(":") for v in s["volumes"]] for name, s in services.items()}
    (boot_shared,) = [m for m in mounts["bootstrap"] if m[1] == shared_dir]
    (peer_shared,) = [m for m in mounts["peer"] if m[1] == shared_dir]
    assert boot_shared == [peer_shared[0], shared_dir], "the bootstrap must be able to write the file"
    assert peer_shared[2:] == ["ro"]
    assert ["bootstrap-repo", "/data"] in mounts["bootstrap"]
    assert not any(m[1] == "/data" for m in mounts["peer"]), "peers share no repo (each has its own)"
    assert set(data["volumes"]) == {m[0] for ms in mounts.values() for m in ms}


# -- the entrypoint -----------------------------------------------------------------------------------


def test_the_entrypoint_is_an_executable_posix_shell_script() -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    for shell in (["sh", "-n"], ["bash", "--posix", "-n"], ["shellcheck", "-s", "sh"]):
        if shutil.which(shell[0]) is None:
            assert shell[0] == "shellcheck", f"{shell[0]} is missing"
            continue
        result = subprocess.run([*shell, str(ENTRYPOINT)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, (shell, result.stdout, result.stderr)


@pytest.fixture
def stub_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose ``sealbox`` prints its arguments, one a line, instead of running."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "sealbox"
    stub.write_text("#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALBOX_")}
    env["PATH"] = f"{bin_dir}:{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env["HOME"] = str(tmp_path)
    env["SEALBOX_BOOTSTRAP_FILE"] = str(tmp_path / "shared" / "bootstrap.addr")
    return env


def entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def argv_of(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout.splitlines()


def failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr, result
    assert result.stderr.rstrip().splitlines()[-1].startswith("sealbox-entrypoint: error: "), result.stderr
    return result.stderr


def test_the_entrypoint_roles_build_the_daemon_command(stub_env: dict[str, str], tmp_path: Path) -> None:
    listen = ["--listen", "/ip4/0.0.0.0/tcp/4001"]
    assert argv_of(entrypoint(stub_env)) == ["daemon", *listen]
    assert argv_of(entrypoint(stub_env, "daemon")) == ["daemon", *listen]
    assert argv_of(entrypoint(stub_env, "--log-level", "debug")) == [
        "daemon",
        *listen,
        "--log-level",
        "debug",
    ]
    # anything else is a command of its own
    assert argv_of(entrypoint(stub_env, "sealbox", "status", "--json")) == ["status", "--json"]

    # 'auto': this host's IPv4 address from the hosts file (never a DNS query), loopback skipped
    hosts = tmp_path / "hosts"
    name = socket.gethostname()
    hosts.write_text(
        f"127.0.0.1 localhost\n127.0.1.1 {name}\n::1 {name}\n# 10.0.0.1 {name}\n10.9.8.7 x {name}\n"
    )
    env = stub_env | {"SEALBOX_HOSTS_FILE": str(hosts), "SEALBOX_LISTEN": "auto /ip6/::1/tcp/4002"}
    assert argv_of(entrypoint(env)) == [
        "daemon",
        "--listen",
        "/ip4/10.9.8.7/tcp/4001",
        "--listen",
        "/ip6/::1/tcp/4002",
    ]
    hosts.write_text("127.0.0.1 localhost\n")
    assert "SEALBOX_LISTEN=auto" in failure(entrypoint(env))

    # a peer: the address from the file, after the listen addresses
    addr_file = Path(stub_env["SEALBOX_BOOTSTRAP_FILE"])
    addr_file.parent.mkdir()
    addr = f"/ip4/172.29.53.10/tcp/4001/p2p/{PEER_ID}"
    addr_file.write_text(addr + "\n")
    assert argv_of(entrypoint(stub_env, "peer", "--log-level", "warning")) == [
        "daemon",
        *listen,
        "--bootstrap",
        addr,
        "--log-level",
        "warning",
    ]
    addr_file.write_text("/ip4/172.29.53.10/tcp/4001\n")
    assert "/p2p/<peer id>" in failure(entrypoint(stub_env, "peer"))


def test_a_peer_gives_up_on_a_missing_bootstrap_address_with_a_clear_error(stub_env: dict[str, str]) -> None:
    env = stub_env | {"SEALBOX_BOOTSTRAP_WAIT": "0"}
    error = failure(entrypoint(env, "peer"))
    assert f"no bootstrap address in {env['SEALBOX_BOOTSTRAP_FILE']} after 0 s" in error
    assert "is the bootstrap node running?" in error
    env["SEALBOX_BOOTSTRAP_WAIT"] = "soon"
    assert "whole number of seconds" in failure(entrypoint(env, "peer"))
    env = stub_env | {"SEALBOX_LISTEN": "0.0.0.0:4001"}
    assert "not a multiaddr" in failure(entrypoint(env, "daemon"))


def status_of(env: dict[str, str]) -> dict[str, Any]:
    """``sealbox status --json`` on the repo ``env`` names (SEALBOX_REPO)."""
    result = subprocess.run(
        ["sealbox", "status", "--json"], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    status: dict[str, Any] = json.loads(result.stdout)
    return status


class Node(LoggedProcess):
    """The entrypoint in one role as a subprocess (it becomes ``sealbox daemon``); the test waits on what
    its log says."""

    log_timeout = LOG_TIMEOUT

    def __init__(self, role: str, env: dict[str, str]) -> None:
        super().__init__([str(ENTRYPOINT), role], env)

    def exit_status(self) -> int:
        """Its exit status once it has exited and its log has ended (send SIGTERM first)."""
        code = self.proc.wait(timeout=STOP_TIMEOUT)
        if not self.wait_ended(STOP_TIMEOUT):  # the address writer must not outlive the daemon
            pytest.fail("a process still holds the node's log after it stopped")
        return code


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        if node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()


def test_the_bootstrap_passes_its_address_to_a_peer_through_the_shared_file(
    tmp_path: Path, nodes: list[Node]
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (tmp_path / "home").mkdir()
    addr_file = shared / "bootstrap.addr"
    base = {k: v for k, v in os.environ.items() if not k.startswith("SEALBOX_")} | {
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path / "home"),
        "SEALBOX_LISTEN": "/ip4/127.0.0.1/tcp/0",
        "SEALBOX_BOOTSTRAP_FILE": str(addr_file),
        "SEALBOX_BOOTSTRAP_WAIT": "20",
    }
    boot_env = base | {"SEALBOX_REPO": str(tmp_path / "bootstrap")}
    peer_env = base | {"SEALBOX_REPO": str(tmp_path / "peer")}
    health = healthcheck_command(dockerfile_stages()[-1])

    def healthy(env: dict[str, str]) -> bool:
        return subprocess.run(health, env=env, capture_output=True, timeout=30, check=False).returncode == 0

    # a file left by an earlier run names another node: the bootstrap removes it before it starts
    addr_file.write_text(f"/ip4/127.0.0.1/tcp/1/p2p/{PEER_ID}\n")
    bootstrap = Node("bootstrap", boot_env)
    nodes.append(bootstrap)
    bootstrap.wait_for(r"starting the bootstrap node")
    with contextlib.suppress(FileNotFoundError):
        assert PEER_ID not in addr_file.read_text()
    peer = Node("peer", peer_env)  # most likely before the address is written: the peer waits for it
    nodes.append(peer)

    written = bootstrap.wait_for(r"bootstrap address (\S+) written to (\S+)")
    assert written.group(2) == str(addr_file)
    address = written.group(1)
    assert addr_file.read_text() == address + "\n"
    status = status_of(boot_env)
    match = ADDR_RE.fullmatch(address)
    assert match is not None and match.group(2) == status["peer_id"] and address in status["addrs"]
    assert not list(shared.glob("*.tmp.*")), "the address is written under a temp name, then renamed"

    assert peer.wait_for(r"joining through (\S+)").group(1) == address
    peer.wait_for(r"bootstrap: reached 1 of 1 peer")
    peer_status = status_of(peer_env)
    assert peer_status["peers"] >= 1
    assert healthy(boot_env)

    # SIGTERM reaches the daemon itself (it replaced the entrypoint's shell): both stop cleanly
    for node in (bootstrap, peer):
        node.proc.send_signal(signal.SIGTERM)
    assert peer.exit_status() == 0
    assert bootstrap.exit_status() == 0
    for node in (bootstrap, peer):
        assert "stopped" in node.output() and "Traceback" not in node.output(), node.output()
    assert not healthy(boot_env), "the health check must fail once the daemon is gone"
