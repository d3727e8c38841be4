import dataclasses

import pandas as pd
import pytest

from shared.sequences import ENGAGEMENT, UserSplit, interaction_sequences, leave_one_out, purchased_items

ITEM_INDEX = {"i0": 0, "i1": 1, "i2": 2, "i3": 3}


def make_events(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event", "timestamp"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["query"] = ""
    return frame


# Deliberately out of time order: the functions must order by timestamp themselves.
EVENTS = make_events(
    [
        ("b", "i2", "click", "2026-01-01T10:03:00"),
        ("b", "i1", "view", "2026-01-01T10:01:00"),
        ("b", "i0", "view", "2026-01-01T10:00:00"),
        ("b", "i1", "search", "2026-01-01T10:02:00"),
        ("b", "i2", "purchase", "2026-01-01T10:04:00"),
        ("b", "i1", "click", "2026-01-01T10:05:00"),
        ("b", "i3", "add_to_cart", "2026-01-01T10:06:00"),
        ("a", "i3", "view", "2026-01-01T09:00:00"),
    ]
)


def test_views_are_not_engagement():
    assert "view" not in ENGAGEMENT
    assert ENGAGEMENT == {"click", "add_to_cart", "purchase", "search"}


def test_sequences_keep_first_engagement_of_each_item_in_time_order():
    sequences = interaction_sequences(EVENTS, ITEM_INDEX)
    # i0 was only viewed; i1 is first engaged by the 10:02 search (its 10:05 click is a repeat);
    # i2 is clicked then bought (one entry); i3 is put in the cart.
    assert sequences["b"] == [1, 2, 3]
    assert list(sequences) == ["a", "b"]
    assert sequences["a"] == []  # only views: listed, not lost


def test_unknown_item_is_an_error_not_a_silent_drop():
    events = make_events([("a", "zz", "click", "2026-01-01T10:00:00")])
    with pytest.raises(KeyError, match="zz"):
        interaction_sequences(events, ITEM_INDEX)


def test_leave_one_out_splits_last_two_items():
    splits, too_short = leave_one_out({"u": [1, 2, 3, 4], "s": [5, 6], "t": [7, 8, 9], "e": []})
    assert splits == {
        "t": UserSplit(train=[7], valid=8, test=9),
        "u": UserSplit(train=[1, 2], valid=3, test=4),
    }
    assert list(splits) == ["t", "u"]
    assert too_short == ["e", "s"]


def test_leave_one_out_min_len_is_respected_and_checked():
    splits, too_short = leave_one_out({"u": [1, 2, 3, 4], "t": [7, 8, 9]}, min_len=4)
    assert list(splits) == ["u"] and too_short == ["t"]
    with pytest.raises(ValueError, match="min_len"):
        leave_one_out({"u": [1, 2]}, min_len=2)


def test_leave_one_out_does_not_alias_the_input():
    sequence = [1, 2, 3, 4]
    splits, _ = leave_one_out({"u": sequence})
    splits["u"].train.append(99)
    assert sequence == [1, 2, 3, 4]
    with pytest.raises(dataclasses.FrozenInstanceError):
        splits["u"].test = 5  # type: ignore[misc]


def test_purchased_items_per_user():
    assert purchased_items(EVENTS, ITEM_INDEX) == {"a": set(), "b": {2}}
