"""The operator helpers of `fedrec deploy`, without starting Flower: the files, and the bounded wait."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_ssh_private_key

from fedrec import deploy
from fedrec.cli import main


def test_certs_are_a_ca_and_a_loopback_server_certificate_it_signed(tmp_path):
    files = deploy.make_certs(tmp_path)
    ca = x509.load_pem_x509_certificate(files["ca.crt"].read_bytes())
    server = x509.load_pem_x509_certificate(files["server.pem"].read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = load_pem_private_key(files["server.key"].read_bytes(), None)
    assert key.public_key().public_numbers() == server.public_key().public_numbers()
    for private in ("ca.key", "server.key"):
        assert files[private].stat().st_mode & 0o777 == 0o600


def test_keys_are_in_the_formats_flower_reads(tmp_path):
    from flwr.cli.supernode.register import try_load_public_key  # what `flwr supernode register` calls

    pairs = deploy.make_keys(tmp_path, 2)
    assert [p.name for pair in pairs for p in pair] == [
        "supernode-0",
        "supernode-0.pub",
        "supernode-1",
        "supernode-1.pub",
    ]
    for private, public in pairs:
        key = load_ssh_private_key(private.read_bytes(), None)  # what `flower-supernode` calls
        assert isinstance(key, ec.EllipticCurvePrivateKey) and private.stat().st_mode & 0o777 == 0o600
        assert try_load_public_key(public)
    assert pairs[0][1].read_text() != pairs[1][1].read_text()


def test_the_cli_refuses_no_nodes(tmp_path, capsys):
    assert main(["deploy", "keys", str(tmp_path), "--nodes", "0"]) == 2
    assert "--nodes must be at least 1" in capsys.readouterr().err


def test_flower_runs_with_no_runtime_install_and_this_virtualenv_first(tmp_path):
    env = deploy.flower_env(tmp_path, base={"PATH": "/usr/bin"})
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1" and env["UV_OFFLINE"] == "1"
    assert env["PATH"].split(os.pathsep) == [str(Path(sys.executable).parent), "/usr/bin"]
    assert env["FLWR_HOME"] == str(tmp_path.resolve())


def _statuses(monkeypatch, *seen: str) -> list[list[str]]:
    """run_status answers `seen` in turn (the last one for ever); returns the flwr calls made."""
    answers, calls = list(seen), []
    monkeypatch.setattr(deploy, "run_status", lambda *a: answers.pop(0) if len(answers) > 1 else answers[0])
    monkeypatch.setattr(deploy, "flwr", lambda args, env, timeout: calls.append(args) or "")
    return calls


def test_a_run_stuck_pending_is_stopped_after_the_bound(monkeypatch):
    calls = _statuses(monkeypatch, "pending")
    with pytest.raises(deploy.RunFailed, match="still pending after 0 s"):
        deploy.wait_for_run(7, "fedrec", {}, timeout=60, pending_timeout=0.05, poll=0.01)
    assert calls == [["stop", "7", "fedrec"]]


def test_a_failed_run_is_an_error_and_a_completed_one_is_not(monkeypatch):
    _statuses(monkeypatch, "pending", "running", "finished:failed")
    with pytest.raises(deploy.RunFailed, match="finished:failed"):
        deploy.wait_for_run(7, None, {}, timeout=60, poll=0.01)
    _statuses(monkeypatch, "starting", "finished:completed")
    assert deploy.wait_for_run(7, None, {}, timeout=60, poll=0.01) == "finished:completed"


def test_existing_certificates_or_keys_are_never_replaced(tmp_path):
    deploy.make_certs(tmp_path / "certs")
    deploy.make_keys(tmp_path / "keys", 1)
    with pytest.raises(FileExistsError, match="already exist"):
        deploy.make_certs(tmp_path / "certs")
    with pytest.raises(FileExistsError, match="supernode-0"):
        deploy.make_keys(tmp_path / "keys", 2)
    assert not (tmp_path / "keys" / "supernode-1").exists()
