"""A party's users under the leave-one-out protocol, ready for training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from shared.schema import load_catalogue, load_events
from shared.sequences import interaction_sequences, leave_one_out


@dataclass
class UserData:
    users: list[str]
    train: list[list[int]]  # catalogue indices, chronological
    valid: list[int]
    test: list[int]
    too_short: list[str]  # users with too few interactions to split; counted, never silently lost

    def split(self, name: str) -> tuple[list[list[int]], list[int]]:
        """(histories, targets): 'valid' predicts the second-to-last item, 'test' the last one."""
        if name == "valid":
            return self.train, self.valid
        if name == "test":
            return [t + [v] for t, v in zip(self.train, self.valid, strict=True)], self.test
        raise ValueError(f"unknown split {name!r}")


def user_data(events: pd.DataFrame, item_index: dict[str, int]) -> UserData:
    splits, too_short = leave_one_out(interaction_sequences(events, item_index))
    users = sorted(splits)
    return UserData(
        users=users,
        train=[splits[u].train for u in users],
        valid=[splits[u].valid for u in users],
        test=[splits[u].test for u in users],
        too_short=too_short,
    )


def load_party(catalogue_path: str | Path, events_path: str | Path, quarantine_dir: str | Path):
    """Catalogue, item index, this party's UserData and the events load report."""
    catalogue = load_catalogue(catalogue_path)
    item_index = {item: i for i, item in enumerate(catalogue["item_id"])}
    events, report = load_events(events_path, catalogue, quarantine_dir)
    return catalogue, item_index, user_data(events, item_index), report
