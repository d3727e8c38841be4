"""Publisher keys: the Ed25519 key pair that signs a published artifact, and what a device pins.

Why: a sha256 list only detects accidents; whoever can write the publication folder can replace a file
and recompute the list. A signature by a key the device already holds cannot be recomputed that way.
The server signs the exact bytes of an artifact's `manifest.json` (which lists sha256 + size of every
other file), so one signature covers the whole artifact (shared/artifact.py).

Key files (`server/app.py` keeps them in `RUN_DIR/server/`):

- `publisher.key`  the private key: PKCS#8 PEM, unencrypted, mode 0600; refused if others can read it
- `publisher.pub`  the public key: SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`, as
                   `openssl pkey -pubout` writes it). This is the file a device is given out of band and
                   pins; a copy found next to an artifact proves nothing, since whoever forged the
                   artifact could have written it.

A key's id is the sha256 (hex) of its 32 raw public-key bytes. Ed25519 signatures are deterministic:
the same key and the same bytes always give the same 64-byte signature.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PRIVATE_KEY_FILE, PUBLIC_KEY_FILE = "publisher.key", "publisher.pub"
SERVER_DIR = "server"  # the run folder's server state, where run_federation keeps the key pair
SIGNATURE_BYTES = 64

PrivateKeyLike = Ed25519PrivateKey | str | Path
PublicKeyLike = Ed25519PublicKey | str | Path


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """sha256 (hex) of the raw public key: names a publisher in manifests and in a device's state."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The 64-byte Ed25519 signature of `data` (deterministic)."""
    return key.sign(data)


def verify(key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


# ---------------------------------------------------------------------------------------------- files
def save_private_key(key: Ed25519PrivateKey, path: str | Path) -> Path:
    """Write the private key as PEM, mode 0600; never overwrites (a replaced key orphans every device)."""
    path = Path(path)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # whatever the umask
        f.write(pem)
    return path


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Read a private key PEM; refused if group or others may read it (as ssh does)."""
    path = Path(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ValueError(f"{path}: private key is readable by others (mode {mode:o}); chmod 600 {path}")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def save_public_key(key: Ed25519PublicKey | Ed25519PrivateKey, path: str | Path) -> Path:
    """Write the public key as SubjectPublicKeyInfo PEM (the file devices pin)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    path = Path(path)
    path.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as err:
        raise ValueError(f"{path}: not a PEM public key ({err})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key


def private_key(key: PrivateKeyLike) -> Ed25519PrivateKey:
    """A key object, or the path of a private key PEM."""
    return key if isinstance(key, Ed25519PrivateKey) else load_private_key(key)


def public_key(key: PublicKeyLike) -> Ed25519PublicKey:
    """A key object, or the path of a public key PEM."""
    return key if isinstance(key, Ed25519PublicKey) else load_public_key(key)


def ensure_key_pair(folder: str | Path) -> Ed25519PrivateKey:
    """The key in `folder/publisher.key`, created (with `publisher.pub` beside it) if there is none yet."""
    folder = Path(folder)
    key_file, pub_file = folder / PRIVATE_KEY_FILE, folder / PUBLIC_KEY_FILE
    if not key_file.exists():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            save_private_key(generate_key(), key_file)
        except FileExistsError:  # created concurrently: use that one
            pass
    key = load_private_key(key_file)
    if not pub_file.exists():
        save_public_key(key, pub_file)
    elif key_id(load_public_key(pub_file)) != key_id(key):
        raise ValueError(f"{pub_file} is not the public half of {key_file}")
    return key


def run_public_key(artifact: str | Path) -> Path:
    """A run's own public key for its index: `<run>/index[/v<NNNN>]` -> `<run>/server/publisher.pub`.

    Trust in the run folder's layout: right for whoever operates the run (simulate's demo, the audit,
    benchmarks) and the command line's default; a real device pins the key it was given instead.
    """
    path = Path(artifact)
    name = path.name
    index = path.parent if name.startswith("v") and name[1:].isdigit() else path
    return index.parent / SERVER_DIR / PUBLIC_KEY_FILE
