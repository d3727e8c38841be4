"""What each user did, in order, and the leave-one-out split used to evaluate it.

Sequences hold catalogue row indices (the item's position in the public catalogue),
so every client and the server agree on what item 17 is.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

# Views are too weak a signal to count as an interaction.
ENGAGEMENT = frozenset({"click", "add_to_cart", "purchase", "search"})


@dataclass(frozen=True)
class UserSplit:
    train: list[int]
    valid: int
    test: int


def interaction_sequences(events: pd.DataFrame, item_index: dict[str, int]) -> dict[str, list[int]]:
    """Per user (sorted), the distinct items engaged with, in order of first engagement.

    Later repeats of an item are dropped: a second click on the same tent says little
    new, and keeping it would let a model score well by predicting "the item again".
    Users who only viewed items are still listed, with an empty sequence, so callers
    can report them instead of losing them.
    """
    ordered = events.sort_values(["user_id", "timestamp"], kind="stable")
    sequences: dict[str, list[int]] = {user: [] for user in sorted(ordered["user_id"].unique())}
    seen: dict[str, set[int]] = {user: set() for user in sequences}
    engaged = ordered[ordered["event"].isin(ENGAGEMENT)]
    for user, item_id in zip(engaged["user_id"], engaged["item_id"], strict=True):
        item = _index_of(item_id, item_index)
        if item not in seen[user]:
            seen[user].add(item)
            sequences[user].append(item)
    return sequences


def leave_one_out(
    sequences: dict[str, list[int]], min_len: int = 3
) -> tuple[dict[str, UserSplit], list[str]]:
    """Last item is the test target, second-to-last the validation target, the rest train.

    Users with fewer than `min_len` items cannot be split and are returned, sorted,
    in the second element.
    """
    if min_len < 3:
        raise ValueError(
            f"min_len must be at least 3 (train, valid and test each need an item), got {min_len}"
        )
    splits: dict[str, UserSplit] = {}
    too_short: list[str] = []
    for user in sorted(sequences):
        items = sequences[user]
        if len(items) < min_len:
            too_short.append(user)
        else:
            splits[user] = UserSplit(train=list(items[:-2]), valid=items[-2], test=items[-1])
    return splits, too_short


def purchased_items(events: pd.DataFrame, item_index: dict[str, int]) -> dict[str, set[int]]:
    """Per user (sorted), the catalogue indices bought; users who bought nothing get an empty set."""
    bought: dict[str, set[int]] = {user: set() for user in sorted(events["user_id"].unique())}
    purchases = events[events["event"] == "purchase"]
    for user, item_id in zip(purchases["user_id"], purchases["item_id"], strict=True):
        bought[user].add(_index_of(item_id, item_index))
    return bought


def _index_of(item_id: str, item_index: dict[str, int]) -> int:
    try:
        return item_index[item_id]
    except KeyError:
        raise KeyError(f"item_id {item_id!r} is not in the catalogue index") from None
