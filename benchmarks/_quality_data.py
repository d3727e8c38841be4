"""The benchmark's data: a RecBole dataset (or a user subsample of it), item categories, client partitions.

The catalogue handed to the model keeps the dataset's item text exactly ("title. categories. brand.",
as UniSRec published it) and an EMPTY category column, so that the encoder reads the same text as in
every published text-based result. The category used to split users over clients is derived here,
for partitioning only (see `item_categories`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shared.data import UserData, user_data
from shared.schema import item_texts
from simulations.partition import dominant_categories, partition_users
from simulations.recbole import AtomicDataset, load_atomic, write_user_subset

ROOT_CATEGORY = "Industrial & Scientific"  # the Amazon 2018 root of every path in this dataset
NO_CATEGORY = "(none)"


@dataclass
class BenchData:
    folder: Path  # the RecBole folder evaluated (the dataset itself, or a user subsample of it)
    dataset: AtomicDataset
    catalogue_csv: Path  # the catalogue as fedrec reads it (category column empty)
    texts: list[str]  # what the item tower reads, one per catalogue index
    categories: list[str]  # derived, for partitioning only
    train_view: UserData  # the users as a client sees them (split re-derived from its events)

    @property
    def n_items(self) -> int:
        return len(self.dataset.catalogue)


def item_categories(texts: list[str], root: str = ROOT_CATEGORY) -> list[str]:
    """A coarse category per item, derived from its text, since the RecBole catalogue has none.

    The text is "title. categories. brand." where categories is the Amazon path joined by spaces, e.g.
    "Industrial & Scientific Tapes, Adhesives & Sealants Adhesive Tapes Duct Tape". The path is the
    last ". "-separated segment starting with `root` (titles may contain ". " too). With the root
    removed, the category is the shortest word prefix of the path (the path included) that is the
    complete path of some item AND is extended by another item's path (an inner node of the category
    tree, e.g. "Tapes, Adhesives & Sealants"), or else the path's first two words. Items without a
    path (134 in Amazon Scientific) get "(none)". On Amazon Scientific this gives 35 categories.
    """
    paths = []
    for text in texts:
        segments = [s.strip() for s in text.strip().rstrip(".").split(". ")]
        found = [s for s in segments if s == root or s.startswith(root + " ")]
        paths.append(found[-1][len(root) :].strip().rstrip(".") if found else "")
    proper_prefixes = {" ".join(p.split()[:k]) for p in paths for k in range(1, len(p.split()))}
    nodes = {p for p in paths if p in proper_prefixes}  # complete paths that other paths extend
    out = []
    for path in paths:
        words = path.split()
        prefixes = (" ".join(words[:k]) for k in range(1, len(words) + 1))
        out.append(next((p for p in prefixes if p in nodes), " ".join(words[:2])) or NO_CATEGORY)
    return out


def sample_users(folder: str | Path, n_users: int, seed: int) -> list[str]:
    """`n_users` user ids drawn without replacement (seeded) from the users the loader keeps."""
    users = load_atomic(folder).users.users
    if n_users >= len(users):
        return list(users)
    chosen = np.random.default_rng(seed).choice(len(users), n_users, replace=False)
    return sorted(users[i] for i in chosen)


def prepare(data: str | Path, work: str | Path, n_users: int | None, seed: int) -> BenchData:
    """Load the dataset (or write and load a user subsample of it) and the catalogue fedrec reads."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    folder = Path(data).resolve()
    if n_users:
        folder = write_user_subset(
            folder, work / f"subset-{n_users}-seed{seed}", sample_users(data, n_users, seed)
        )
    dataset = load_atomic(folder)
    catalogue_csv = work / "catalogue.csv"
    dataset.catalogue.to_csv(catalogue_csv, index=False)
    texts = item_texts(dataset.catalogue)
    item_index = {item: i for i, item in enumerate(dataset.catalogue["item_id"])}
    return BenchData(
        folder=folder,
        dataset=dataset,
        catalogue_csv=catalogue_csv,
        texts=texts,
        categories=item_categories(texts),
        train_view=user_data(dataset.events, item_index),
    )


def client_partitions(bench: BenchData, num_clients: int, alpha: float, seed: int) -> list[list[str]]:
    """Non-IID clients: each user's dominant derived category, each category Dirichlet(alpha) over clients."""
    return partition_users(
        bench.dataset.events, _with_categories(bench), num_clients, "dirichlet", alpha, seed=seed
    )


def partition_summary(bench: BenchData, parts: list[list[str]]) -> dict:
    """Sizes and category mix per client, to show how non-IID the split is."""
    dominant = dominant_categories(bench.dataset.events, _with_categories(bench))
    per_client = []
    for users in parts:
        counts = Counter(dominant[u] for u in users)
        top, top_n = counts.most_common(1)[0]
        per_client.append(
            {"users": len(users), "categories": len(counts), "top": top, "top_share": top_n / len(users)}
        )
    return {"users_per_client": [len(p) for p in parts], "clients": per_client}


def subset(users: UserData, ids: list[str]) -> UserData:
    """The rows of `users` whose id is in `ids` (order of `users` kept)."""
    keep = set(ids)
    rows = [i for i, u in enumerate(users.users) if u in keep]
    return UserData(
        users=[users.users[i] for i in rows],
        train=[users.train[i] for i in rows],
        valid=[users.valid[i] for i in rows],
        test=[users.test[i] for i in rows],
        too_short=[u for u in users.too_short if u in keep],
    )


def _with_categories(bench: BenchData) -> pd.DataFrame:
    return bench.dataset.catalogue.assign(category=bench.categories)
