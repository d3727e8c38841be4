"""`fedrec deploy`: the operator's helpers for a real deployment (one SuperNode process per partner).

Flower does the federation; this module only saves the operator the error-prone steps around it:
- `certs`: a development CA and a server TLS certificate for the SuperLink (loopback by default). A
  production deployment uses certificates from its own CA; the file names are the same.
- `keys`: one key pair per SuperNode, in the formats Flower 1.41 reads: the private key in OpenSSH
  format (`flower-supernode --auth-supernode-private-key`), the public key as an OpenSSH line
  (`flwr supernode register`). EC P-384, the curve Flower itself generates (it accepts NIST curves only).
- `run`: `flwr run` with runtime dependency installation off and the virtualenv's own executables on
  PATH (flwr starts `flower-superlink` by name), then a bounded wait on the run's status: a run that
  stays "pending" (a known Flower failure mode) or fails ends with a clear message and a non-zero exit,
  where `flwr run` alone exits 0.
- `register_node`, `wait_until_offline`: a crashed SuperNode comes back only once the SuperLink counts
  it offline (up to 60 s after its last heartbeat); restarted sooner it is refused and exits.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.durable import write_bytes
from simulations.run import QUIET_FLOWER  # no runtime installs (uv would pull CUDA torch), no phoning home

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.pem", "server.key"
LOOPBACK = ("127.0.0.1", "localhost")
CURVE = ec.SECP384R1
PRIVATE = 0o600


def make_certs(out: str | Path, hosts: tuple[str, ...] = LOOPBACK, days: int = 365) -> dict[str, Path]:
    """A development CA (ca.crt, ca.key) and the SuperLink's certificate for `hosts` (server.pem/.key)."""
    out = Path(out)
    _refuse_to_replace([out / name for name in (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY)])
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(CURVE())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedrec development CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(CURVE())
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    server_cert = (
        _builder(server_name, ca_name, server_key.public_key(), now, days)
        .add_extension(x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    files = {CA_CERT: ca_cert, CA_KEY: ca_key, SERVER_CERT: server_cert, SERVER_KEY: server_key}
    for name, value in files.items():
        if isinstance(value, x509.Certificate):
            write_bytes(out / name, value.public_bytes(serialization.Encoding.PEM))
        else:
            write_bytes(out / name, _pem_private(value), PRIVATE)
    return {name: out / name for name in files}


def make_keys(out: str | Path, nodes: int, prefix: str = "supernode") -> list[tuple[Path, Path]]:
    """`nodes` SuperNode key pairs: (OUT/<prefix>-<i>, OUT/<prefix>-<i>.pub), named as ssh-keygen would."""
    if nodes < 1:
        raise ValueError(f"--nodes must be at least 1, got {nodes}")
    out = Path(out)
    _refuse_to_replace([out / f"{prefix}-{i}{end}" for i in range(nodes) for end in ("", ".pub")])
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for index in range(nodes):
        key = ec.generate_private_key(CURVE())
        private, public = out / f"{prefix}-{index}", out / f"{prefix}-{index}.pub"
        openssh = serialization.PrivateFormat.OpenSSH
        write_bytes(
            private,
            key.private_bytes(serialization.Encoding.PEM, openssh, serialization.NoEncryption()),
            PRIVATE,
        )
        line = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        write_bytes(public, line + f" fedrec-{prefix}-{index}\n".encode())
        pairs.append((private, public))
    return pairs


def flower_env(flwr_home: str | Path | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for Flower's commands: quiet, no runtime installs, this virtualenv's bin/ on PATH."""
    env = dict(os.environ if base is None else base)
    env.update(QUIET_FLOWER)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, *[p for p in env.get("PATH", "").split(os.pathsep) if p]])
    if flwr_home is not None:
        env["FLWR_HOME"] = str(Path(flwr_home).resolve())
    return env


class RunFailed(RuntimeError):
    """A Flower run that did not complete (failed, stopped, or stuck pending past the bound)."""


def flwr(args: list[str], env: dict[str, str], timeout: float) -> str:
    """One `flwr` CLI call (the virtualenv's), bounded; its stdout, or RuntimeError with its message."""
    command = [str(Path(sys.executable).parent / "flwr"), *args]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"flwr {' '.join(args[:1])} did not answer within {timeout:.0f} s") from None
    if done.returncode != 0:
        message = " ".join((done.stderr or done.stdout).split())[-2000:]
        raise RuntimeError(f"flwr {' '.join(args[:1])} exited {done.returncode}: {message}")
    return done.stdout


def start_run(
    app: str,
    connection: str | None,
    run_config: list[str],
    env: dict[str, str],
    federation_config: list[str] | None = None,
    timeout: float = 120,
) -> int:
    """Submit the app (`flwr run`); returns the run id. `federation_config`: a local simulation's settings."""
    args = ["run", app, *([connection] if connection else []), "--format", "json"]
    for overrides in run_config:
        args += ["--run-config", overrides]
    for overrides in federation_config or []:
        args += ["--federation-config", overrides]
    answer = _json(flwr(args, env, timeout))
    if not answer.get("run-id"):
        raise RuntimeError(f"flwr run: no run started: {answer.get('error', answer)}")
    return int(answer["run-id"])


def run_status(run_id: int, connection: str | None, env: dict[str, str], timeout: float = 30) -> str:
    """The run's status as `flwr ls` says it: pending, starting, running, finished:completed, ..."""
    args = ["ls", *([connection] if connection else []), "--run-id", str(run_id), "--format", "json"]
    return str(_json(flwr(args, env, timeout))["runs"][0]["status"])


def wait_for_run(
    run_id: int,
    connection: str | None,
    env: dict[str, str],
    timeout: float,
    pending_timeout: float = 120,
    poll: float = 2.0,
) -> str:
    """Wait, bounded, until the run finishes; returns "finished:completed" or raises RunFailed.

    A run still pending after `pending_timeout` (no SuperNode, or Flower's known stuck-pending failure)
    or unfinished after `timeout` is stopped (`flwr stop`) and reported.
    """
    started = time.monotonic()
    while True:
        status = run_status(run_id, connection, env)
        waited = time.monotonic() - started
        if status.startswith("finished"):
            if status != "finished:completed":
                raise RunFailed(f"run {run_id} ended {status}: see `flwr log {run_id} --show`")
            return status
        stuck = status == "pending" and waited > pending_timeout
        if stuck or waited > timeout:
            _stop(run_id, connection, env)
            why = (
                f"still pending after {pending_timeout:.0f} s"
                if stuck
                else f"not finished after {timeout:.0f} s"
            )
            raise RunFailed(f"run {run_id} {why} (status {status}); stopped it")
        time.sleep(poll)


def run_logs(run_id: int, connection: str | None, env: dict[str, str], timeout: float = 60) -> str:
    """The run's logs as the SuperLink kept them (`flwr log --show`)."""
    return flwr(["log", str(run_id), *([connection] if connection else []), "--show"], env, timeout)


def register_node(
    public_key: str | Path, connection: str | None, env: dict[str, str], timeout: float = 60
) -> int:
    """Put a SuperNode's public key on the SuperLink's allow-list (`flwr supernode register`); its node ID."""
    where = [connection] if connection else []
    args = ["supernode", "register", str(public_key), *where, "--format", "json"]
    return int(_json(flwr(args, env, timeout))["node-id"])


def node_status(node_id: int, connection: str | None, env: dict[str, str], timeout: float = 30) -> str | None:
    """The SuperNode's status as the SuperLink says it (`flwr supernode ls`): online, offline, ...; None:
    not listed."""
    args = ["supernode", "ls", *([connection] if connection else []), "--format", "json"]
    nodes = _json(flwr(args, env, timeout))["nodes"]
    return next((n["status"] for n in nodes if int(n["node-id"]) == node_id), None)


def wait_until_offline(
    node_id: int, connection: str | None, env: dict[str, str], timeout: float = 150, poll: float = 2.0
) -> None:
    """Wait, bounded, until the SuperLink counts a crashed SuperNode offline, so that it may come back.

    Flower 1.41's SuperLink activates a node only from "registered" or "offline"
    (`server/superlink/linkstate/in_memory_linkstate.py`, `activate_node`), and a crashed node stays
    "online" until its last heartbeat's deadline: 2 x 30 s (`HEARTBEAT_PATIENCE` x
    `HEARTBEAT_DEFAULT_INTERVAL`, fixed, no flag). A SuperNode restarted before then is refused with
    412 "could not be activated", which it does not retry: it exits at once.
    """
    deadline = time.monotonic() + timeout
    while (status := node_status(node_id, connection, env)) == "online":
        if time.monotonic() > deadline:
            raise RuntimeError(f"SuperNode {node_id} still online after {timeout:.0f} s")
        time.sleep(poll)
    if status != "offline":
        raise RuntimeError(f"SuperNode {node_id} is {status or 'not registered'}, not offline")


def _stop(run_id: int, connection: str | None, env: dict[str, str]) -> None:
    try:
        flwr(["stop", str(run_id), *([connection] if connection else [])], env, timeout=30)
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        print(f"fedrec deploy: could not stop run {run_id}: {err}", file=sys.stderr)


def _json(text: str) -> dict:
    """The JSON object in a `flwr --format json` output (flwr may print notices before it)."""
    return json.loads(text[text.index("{") :])


def _refuse_to_replace(paths: list[Path]) -> None:
    """A new CA or key silently replacing one in use would lock out every party that holds the old one."""
    there = [str(p) for p in paths if p.exists()]
    if there:
        raise FileExistsError(f"{', '.join(there)} already exist(s): move them away to make new ones")


def _builder(
    subject: x509.Name, issuer: x509.Name, key, now: dt.datetime, days: int
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
