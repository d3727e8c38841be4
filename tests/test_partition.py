import numpy as np
import pandas as pd
import pytest

from shared.embedded import iid_split
from shared.schema import load_events
from simulations.partition import (
    SCHEMES,
    dominant_categories,
    partition_users,
    split_by_column,
    write_partitions,
)
from simulations.shop import ShopConfig, generate_shop


@pytest.fixture(scope="module")
def shop():
    """(events, catalogue): the argument order of partition_users."""
    catalogue, events = generate_shop(ShopConfig(n_items=300, n_users=200, seed=1))
    return events, catalogue


@pytest.fixture(scope="module")
def users(shop):
    return sorted(shop[0]["user_id"].unique())


def concentration(parts: list[list[str]], dominant: dict[str, str]) -> float:
    """Mean over clients of the share of its users whose dominant category is the client's commonest."""
    shares = []
    for part in parts:
        counts = pd.Series([dominant[user] for user in part]).value_counts()
        shares.append(counts.iloc[0] / len(part))
    return float(np.mean(shares))


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
@pytest.mark.parametrize("num_clients", [1, 3, 10])
def test_partitions_are_disjoint_covering_sorted_and_non_empty(shop, users, scheme, num_clients):
    parts = partition_users(*shop, num_clients=num_clients, scheme=scheme, alpha=0.1)
    assert len(parts) == num_clients
    flat = [user for part in parts for user in part]
    assert len(flat) == len(set(flat)) and sorted(flat) == users
    assert all(part and part == sorted(part) for part in parts)


def test_iid_sizes_differ_by_at_most_one(shop):
    sizes = [len(part) for part in partition_users(*shop, num_clients=7)]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_same_seed_same_partition_other_seed_different(shop, scheme):
    first = partition_users(*shop, num_clients=5, scheme=scheme, seed=11)
    assert first == partition_users(*shop, num_clients=5, scheme=scheme, seed=11)
    assert first != partition_users(*shop, num_clients=5, scheme=scheme, seed=12)


def test_small_alpha_dirichlet_is_more_skewed_than_iid(shop):
    dominant = dominant_categories(*shop)
    iid = np.mean([concentration(partition_users(*shop, 10, "iid", seed=s), dominant) for s in range(3)])
    skewed = np.mean(
        [
            concentration(partition_users(*shop, 10, "dirichlet", alpha=0.05, seed=s), dominant)
            for s in range(3)
        ]
    )
    assert skewed > iid + 0.15


def test_dirichlet_repairs_empty_clients(shop, users):
    parts = partition_users(*shop, num_clients=60, scheme="dirichlet", alpha=0.01)
    assert len(parts) == 60 and all(parts)
    assert sorted(user for part in parts for user in part) == users


def test_dominant_category_is_the_most_frequent_one():
    catalogue = pd.DataFrame({"item_id": ["t1", "t2", "c1"], "category": ["Tents", "Tents", "Cameras"]})
    events = pd.DataFrame({"user_id": ["a", "a", "a", "b", "b"], "item_id": ["c1", "t1", "t2", "c1", "t1"]})
    assert dominant_categories(events, catalogue) == {"a": "Tents", "b": "Cameras"}  # tie -> alphabetical


@pytest.mark.parametrize("num_clients", [0, 200])
def test_user_scheme_gives_one_user_per_client(shop, users, num_clients):
    parts = partition_users(*shop, num_clients=num_clients, scheme="user")
    assert parts == [[user] for user in users]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_clients": 3, "scheme": "random"}, "unknown partition scheme 'random'"),
        ({"num_clients": 0}, "num_clients must be at least 1"),
        ({"num_clients": -2, "scheme": "dirichlet"}, "num_clients must be at least 1"),
        ({"num_clients": 5, "scheme": "user"}, "number of users"),
        ({"num_clients": 201}, "only 200 users"),
        ({"num_clients": 3, "scheme": "dirichlet", "alpha": 0.0}, "alpha must be positive"),
        ({"num_clients": 3, "scheme": "sizes", "sizes": [50]}, "needs 2 positive sizes"),
        ({"num_clients": 2, "scheme": "sizes", "sizes": [200]}, "the last client takes the rest"),
        ({"num_clients": 2, "scheme": "sizes", "sizes": [0]}, "positive sizes"),
    ],
)
def test_bad_arguments_are_rejected(shop, kwargs, message):
    with pytest.raises(ValueError, match=message):
        partition_users(*shop, **kwargs)


def test_scheme_names():
    assert SCHEMES == ("iid", "dirichlet", "user", "sizes")


def test_sizes_gives_unequal_partners_and_the_last_takes_the_rest(shop, users):
    parts = partition_users(*shop, num_clients=3, scheme="sizes", sizes=[5, 50])
    assert [len(p) for p in parts] == [5, 50, len(users) - 55]
    flat = [user for part in parts for user in part]
    assert sorted(flat) == users and len(set(flat)) == len(users)


def test_written_partitions_hold_each_users_logs_exactly_once(tmp_path, shop):
    raw_events, catalogue = shop
    raw_events.to_csv(tmp_path / "events.csv", index=False)
    events, _ = load_events(tmp_path / "events.csv", catalogue, tmp_path / "q")
    parts = partition_users(events, catalogue, num_clients=4, scheme="dirichlet")

    paths = write_partitions(events, parts, tmp_path / "clients")
    assert paths == [tmp_path / "clients" / f"client-{i}" / "events.csv" for i in range(4)]
    reloaded = []
    for path, part in zip(paths, parts, strict=True):
        client_events, report = load_events(path, catalogue, tmp_path / "q")
        assert report.quarantined == 0
        assert sorted(client_events["user_id"].unique()) == part
        assert list(pd.read_csv(path, nrows=0).columns) == list(events.columns)
        reloaded.append(client_events)
    together = pd.concat(reloaded).sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(together, events)


def test_write_partitions_keeps_text_timestamps_as_they_are(tmp_path, shop):
    raw_events, catalogue = shop
    parts = partition_users(raw_events, catalogue, num_clients=2)
    paths = write_partitions(raw_events, parts, tmp_path)
    written = pd.concat(pd.read_csv(path, dtype=str, keep_default_na=False) for path in paths)
    assert sorted(written["timestamp"]) == sorted(raw_events["timestamp"])


def test_write_partitions_refuses_to_lose_or_copy_a_user(tmp_path, shop):
    events, catalogue = shop
    parts = partition_users(events, catalogue, num_clients=2)
    with pytest.raises(ValueError, match="no partition"):
        write_partitions(events, [parts[0]], tmp_path)
    with pytest.raises(ValueError, match="partitions 0 and 1"):
        write_partitions(events, [parts[0], parts[1] + parts[0][:1]], tmp_path)


def _shop_column(events: pd.DataFrame) -> pd.DataFrame:
    """The logs with a `shop` column: users spread over three shops, one user at two, a row with none."""
    out = events.copy()
    users = sorted(out["user_id"].unique())
    shop_of = {user: ("north", "south", "west")[i % 3] for i, user in enumerate(users)}
    out["shop"] = out["user_id"].map(shop_of)
    out.loc[out.index[(out["user_id"] == users[0]).to_numpy()][:2], "shop"] = "south"  # a customer of two
    out.loc[out.index[-1], "shop"] = ""
    return out


def test_partition_by_column_gives_one_client_per_value_with_its_own_rows(tmp_path, shop):
    events = _shop_column(shop[0])
    events.to_csv(tmp_path / "events.csv", index=False)
    values, parts, unassigned = split_by_column(tmp_path / "events.csv", "shop", tmp_path / "partitions")
    assert values == ["north", "south", "west"] and unassigned == 1
    total = 0
    for client, value in enumerate(values):
        rows = pd.read_csv(tmp_path / "partitions" / f"client-{client}" / "events.csv", dtype=str)
        assert set(rows["shop"]) == {value} and list(rows.columns) == list(events.columns)
        assert parts[client] == sorted(rows["user_id"].unique())
        total += len(rows)
    assert total == len(events) - 1  # every row with a value, exactly once
    first = sorted(events["user_id"].unique())[0]
    assert first in parts[0] and first in parts[1]  # one user at each partner it shops at


def test_partition_by_column_reads_parquet(tmp_path, shop):
    events = _shop_column(shop[0])
    events["timestamp"] = pd.to_datetime(events["timestamp"], utc=True)
    events.to_parquet(tmp_path / "events.parquet")
    values, _, _ = split_by_column(tmp_path / "events.parquet", "shop", tmp_path / "partitions")
    rows = pd.read_csv(tmp_path / "partitions" / "client-0" / "events.csv", dtype=str)
    assert len(values) == 3 and rows["timestamp"].str.endswith("+00:00").all()


@pytest.mark.parametrize(
    "column, values, message",
    [
        ("region", None, "no such column"),
        ("shop", ["north"], "1 distinct value"),
        ("shop", [""], "0 distinct"),
    ],
)
def test_partition_by_column_refuses_a_missing_column_or_a_single_client(
    tmp_path, shop, column, values, message
):
    events = shop[0].copy()
    if values:
        events["shop"] = values[0]
    events.to_csv(tmp_path / "events.csv", index=False)
    with pytest.raises(ValueError, match=message):
        split_by_column(tmp_path / "events.csv", column, tmp_path / "partitions")


def test_simulate_partition_by_fails_before_any_training(tmp_path):
    from fedrec.cli import main

    catalogue, events = generate_shop(ShopConfig(n_items=60, n_users=20, seed=2))
    catalogue.to_csv(tmp_path / "catalogue.csv", index=False)
    events.to_csv(tmp_path / "events.csv", index=False)
    argv = ["simulate", "--out", str(tmp_path / "run"), "--catalogue", str(tmp_path / "catalogue.csv")]
    argv += ["--events", str(tmp_path / "events.csv"), "--partition-by", "shop"]
    assert main(argv) == 2  # the CLI's one-line error, exit 2
    assert not (tmp_path / "run" / "partitions").exists()


def test_iid_partition_is_the_split_each_embedded_client_derives(shop, users):
    assert partition_users(*shop, num_clients=3, scheme="iid", seed=4) == iid_split(users, 3, seed=4)
