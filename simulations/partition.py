"""Split users across simulated federated clients.

A client is a shop front, app or device that holds its users' logs privately, so a
user's logs are never split between clients. The schemes range from the friendly
case (iid) to the realistic one where clients serve different niches (dirichlet).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from shared.embedded import iid_split

SCHEMES = ("iid", "dirichlet", "user", "sizes")


def partition_users(
    events: pd.DataFrame,
    catalogue: pd.DataFrame,
    num_clients: int,
    scheme: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    sizes: list[int] | None = None,
) -> list[list[str]]:
    """Assign every user to exactly one client; returns one sorted user list per client.

    iid: users shuffled and dealt out evenly. dirichlet: users grouped by their dominant
    category, each category spread over clients with Dirichlet(alpha) proportions (small
    alpha = each client sees few categories), then empty clients are filled from the
    largest. user: one user per client (num_clients must be the number of users, or 0).
    sizes: users shuffled, the first clients get `sizes` users each and the last one the rest (unequal
    partners, e.g. a small shop beside a large one).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    users = sorted(events["user_id"].astype(str).unique())
    if scheme == "user":
        if num_clients not in (0, len(users)):
            raise ValueError(
                f"scheme 'user' needs num_clients == number of users ({len(users)}) or 0, got {num_clients}"
            )
        return [[user] for user in users]
    if num_clients < 1:
        raise ValueError(f"num_clients must be at least 1, got {num_clients}")
    if num_clients > len(users):
        raise ValueError(
            f"cannot give each of {num_clients} clients a user: there are only {len(users)} users"
        )

    if scheme == "iid":
        return iid_split(users, num_clients, seed)  # the split `flwr run .` derives (shared/embedded.py)
    rng = np.random.default_rng(seed)
    if scheme == "sizes":
        sizes = list(sizes or [])
        if len(sizes) != num_clients - 1 or min(sizes, default=1) < 1 or sum(sizes) >= len(users):
            raise ValueError(
                f"scheme 'sizes' needs {num_clients - 1} positive sizes (the last client takes the rest)"
                f" summing to less than the {len(users)} users, got {sizes}"
            )
        order = rng.permutation(len(users))
        parts = [[users[i] for i in chunk] for chunk in np.split(order, np.cumsum(sizes))]
    else:
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        parts = _dirichlet(dominant_categories(events, catalogue), num_clients, alpha, rng)
    return [sorted(part) for part in parts]


def dominant_categories(events: pd.DataFrame, catalogue: pd.DataFrame) -> dict[str, str]:
    """Each user's most frequent category over all their events (ties: alphabetically first)."""
    category = dict(zip(catalogue["item_id"].astype(str), catalogue["category"].astype(str), strict=True))
    frame = pd.DataFrame(
        {
            "user_id": events["user_id"].astype(str),
            "category": events["item_id"].astype(str).map(category).fillna(""),
        }
    )
    counts = frame.groupby(["user_id", "category"]).size().reset_index(name="n")
    counts = counts.sort_values(["user_id", "n", "category"], ascending=[True, False, True], kind="stable")
    top = counts.drop_duplicates("user_id")
    return dict(zip(top["user_id"], top["category"], strict=True))


def _dirichlet(
    dominant: dict[str, str], num_clients: int, alpha: float, rng: np.random.Generator
) -> list[list[str]]:
    parts: list[list[str]] = [[] for _ in range(num_clients)]
    for category in sorted(set(dominant.values())):
        members = [user for user in sorted(dominant) if dominant[user] == category]
        members = [members[i] for i in rng.permutation(len(members))]
        proportions = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(int)
        for client, chunk in enumerate(np.split(np.array(members, dtype=object), cuts)):
            parts[client].extend(chunk.tolist())
    # Repair: every client needs at least one user to take part in training.
    for client in range(num_clients):
        if not parts[client]:
            largest = max(range(num_clients), key=lambda i: len(parts[i]))
            parts[client].append(parts[largest].pop())
    return parts


def write_partitions(events: pd.DataFrame, partitions: list[list[str]], out_dir: str | Path) -> list[Path]:
    """Write out_dir/client-<i>/events.csv for each partition, timestamps as ISO-8601 text.

    Every user in the events must be in exactly one partition, so no log is lost or copied.
    """
    owner: dict[str, int] = {}
    for client, users in enumerate(partitions):
        for user in users:
            if user in owner:
                raise ValueError(f"user {user!r} is in partitions {owner[user]} and {client}")
            owner[user] = client
    client_of = events["user_id"].astype(str).map(owner)
    if client_of.isna().any():
        missing = sorted(events.loc[client_of.isna(), "user_id"].astype(str).unique())
        raise ValueError(f"{len(missing)} users are in no partition, e.g. {missing[:3]}")

    out = events.copy()
    if pd.api.types.is_datetime64_any_dtype(out["timestamp"]):
        stamps = out["timestamp"]
        if stamps.dt.tz is None:
            stamps = stamps.dt.tz_localize("UTC")
        out["timestamp"] = [stamp.isoformat() for stamp in stamps.dt.tz_convert("UTC")]

    paths = []
    for client in range(len(partitions)):
        path = Path(out_dir) / f"client-{client}" / "events.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        out[(client_of == client).to_numpy()].to_csv(path, index=False)
        paths.append(path)
    return paths


def split_by_column(
    path: str | Path, column: str, out_dir: str | Path
) -> tuple[list[str], list[list[str]], int]:
    """Natural partitions: one client per distinct value of `column` in the raw log at `path`.

    Real partners are silos: each holds the rows of its own shop or region as they are, and its own node
    validates them (a bad row is quarantined there and touches no other partner). A customer of two
    partners is one user at each, as in a deployment. Writes out_dir/client-<i>/events.csv; returns the
    values (client i holds values[i], in sorted order), each client's user ids, and how many rows had no
    value (in no partition).
    """
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        raw = pd.read_parquet(path)
    else:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    if column not in raw.columns:
        raise ValueError(
            f"--partition-by {column!r}: {path.name} has no such column; it has {list(raw.columns)}"
        )
    values = raw[column].astype("string").fillna("").str.strip()
    names = sorted(set(values) - {""})
    if len(names) < 2:
        raise ValueError(
            f"--partition-by {column!r}: {len(names)} distinct value(s) in {path.name}, a federation needs"
            " at least 2 clients"
        )
    for name in raw.columns:  # Parquet timestamps as ISO-8601 text, as write_partitions writes them
        if pd.api.types.is_datetime64_any_dtype(raw[name]):
            stamps = raw[name] if raw[name].dt.tz is not None else raw[name].dt.tz_localize("UTC")
            raw[name] = [stamp.isoformat() for stamp in stamps.dt.tz_convert("UTC")]
    parts = []
    for client, name in enumerate(names):
        rows = raw[(values == name).to_numpy()]
        target = Path(out_dir) / f"client-{client}" / "events.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        rows.to_csv(target, index=False)
        parts.append(sorted(rows["user_id"].astype(str).unique()) if "user_id" in rows else [])
    return names, parts, int((values == "").sum())
