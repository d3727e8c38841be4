"""Publisher keys: files, modes, ids, deterministic signatures, and the run folder's key pair."""

from __future__ import annotations

import hashlib
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shared.signing import (
    ensure_key_pair,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    run_public_key,
    save_private_key,
    save_public_key,
    sign,
    verify,
)


def test_private_key_is_saved_0600_and_never_overwritten(tmp_path):
    key = generate_key()
    path = save_private_key(key, tmp_path / "publisher.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert key_id(load_private_key(path)) == key_id(key)
    with pytest.raises(FileExistsError):
        save_private_key(generate_key(), path)
    assert key_id(load_private_key(path)) == key_id(key)


def test_a_private_key_others_can_read_is_refused(tmp_path):
    path = save_private_key(generate_key(), tmp_path / "publisher.key")
    path.chmod(0o644)
    with pytest.raises(ValueError, match="readable by others.*chmod 600"):
        load_private_key(path)


def test_public_key_pem_round_trip_and_id(tmp_path):
    key = generate_key()
    path = save_public_key(key, tmp_path / "publisher.pub")
    assert path.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    loaded = load_public_key(path)
    raw = loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id(loaded) == key_id(key) == hashlib.sha256(raw).hexdigest()


def test_a_public_key_that_is_not_ed25519_is_refused(tmp_path):
    other = X25519PrivateKey.generate().public_key()
    (tmp_path / "x25519.pub").write_bytes(
        other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        load_public_key(tmp_path / "x25519.pub")
    (tmp_path / "junk.pub").write_text("not a key\n")
    with pytest.raises(ValueError, match="not a PEM public key"):
        load_public_key(tmp_path / "junk.pub")


def test_signatures_are_deterministic_and_bound_to_key_and_bytes():
    key, other = generate_key(), generate_key()
    data = b'{"round": 3}\n'
    signature = sign(key, data)
    assert len(signature) == 64 and sign(key, data) == signature
    assert verify(key.public_key(), signature, data)
    assert not verify(key.public_key(), signature, b'{"round": 4}\n')
    assert not verify(other.public_key(), signature, data)
    assert not verify(key.public_key(), sign(other, data), data)


def test_ensure_key_pair_creates_once_then_reuses(tmp_path):
    folder = tmp_path / "run" / "server"
    key = ensure_key_pair(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["publisher.key", "publisher.pub"]
    assert stat.S_IMODE((folder / "publisher.key").stat().st_mode) == 0o600
    assert key_id(load_public_key(folder / "publisher.pub")) == key_id(key)
    assert key_id(ensure_key_pair(folder)) == key_id(key)  # a second run keeps its devices' pin

    (folder / "publisher.pub").unlink()  # lost public half: written again from the private key
    assert key_id(ensure_key_pair(folder)) == key_id(key)
    assert key_id(load_public_key(folder / "publisher.pub")) == key_id(key)

    save_public_key(generate_key(), folder / "publisher.pub.new")
    (folder / "publisher.pub.new").replace(folder / "publisher.pub")
    with pytest.raises(ValueError, match="is not the public half"):
        ensure_key_pair(folder)


def test_run_public_key_follows_the_run_folder_layout(tmp_path):
    run = tmp_path / "run"
    assert run_public_key(run / "index" / "v0003") == run / "server" / "publisher.pub"
    assert run_public_key(run / "index") == run / "server" / "publisher.pub"
