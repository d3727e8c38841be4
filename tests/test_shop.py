import numpy as np
import pandas as pd
import pytest

from shared.schema import CATALOGUE_COLUMNS, EVENT_TYPES, EVENTS_COLUMNS, load_catalogue, load_events
from shared.sequences import ENGAGEMENT, interaction_sequences
from simulations.shop import CATEGORIES, COMPLEMENTS, ShopConfig, generate_shop, write_shop

SMALL = ShopConfig(n_items=300, n_users=120, seed=3)
DEPARTMENT = {cat.name: cat.department for cat in CATEGORIES}


@pytest.fixture(scope="module")
def shop():
    """The default shop, generated once for the module (about 2 s)."""
    return generate_shop()


@pytest.fixture(scope="module")
def sequences(shop):
    catalogue, events = shop
    return interaction_sequences(events, {item: i for i, item in enumerate(catalogue["item_id"])})


def test_same_seed_gives_identical_frames():
    first, second = generate_shop(SMALL), generate_shop(SMALL)
    pd.testing.assert_frame_equal(first[0], second[0])
    pd.testing.assert_frame_equal(first[1], second[1])


def test_different_seed_gives_a_different_shop():
    catalogue, events = generate_shop(SMALL)
    other_catalogue, other_events = generate_shop(ShopConfig(n_items=300, n_users=120, seed=4))
    assert not catalogue["title"].equals(other_catalogue["title"])
    assert not events.equals(other_events)


def test_default_sizes_and_columns(shop):
    catalogue, events = shop
    assert list(catalogue.columns) == list(CATALOGUE_COLUMNS)
    assert list(events.columns) == list(EVENTS_COLUMNS)
    assert len(catalogue) == 2400 and catalogue["item_id"].is_unique
    assert events["user_id"].nunique() == 6000
    assert 100_000 <= len(events) <= 200_000
    assert set(events["event"]) == set(EVENT_TYPES)
    assert catalogue["category"].nunique() == len(CATEGORIES) == 25
    assert len({cat.department for cat in CATEGORIES}) == 5


def test_catalogue_looks_like_a_shop(shop):
    catalogue, _ = shop
    assert catalogue["title"].nunique() > 0.9 * len(catalogue)  # varied, with rare duplicates
    assert all(
        title.startswith(brand + " ")
        for title, brand in zip(catalogue["title"], catalogue["brand"], strict=True)
    )
    assert (catalogue["price"] > 0).all()
    assert np.allclose(catalogue["price"] * 100, (catalogue["price"] * 100).round())
    assert (catalogue["description"].str.len() > 20).all()
    # Brand price tiers: in every category the dearest brand costs well above the cheapest.
    by_brand = catalogue.groupby(["category", "brand"])["price"].median()
    spread = by_brand.groupby(level="category").max() / by_brand.groupby(level="category").min()
    assert (spread > 2).all()


def test_every_user_engages_with_at_least_six_distinct_items(sequences):
    lengths = np.array([len(items) for items in sequences.values()])
    assert lengths.min() >= 6
    assert 12 <= lengths.mean() <= 20


def test_funnel_narrows(shop):
    counts = shop[1]["event"].value_counts()
    assert counts["view"] > counts["click"] > counts["add_to_cart"] > counts["purchase"] > 0
    assert counts["search"] > 0


def test_timestamps_are_iso_utc_and_increase_per_user(shop):
    events = shop[1]
    assert events["timestamp"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()
    stamps = pd.to_datetime(events["timestamp"], utc=True)
    assert (stamps.groupby(events["user_id"]).diff().dropna() > pd.Timedelta(0)).all()
    assert stamps.min() >= pd.Timestamp("2026-01-01", tz="UTC")


def test_search_events_carry_a_query_for_the_clicked_item(shop):
    catalogue, events = shop
    searches = events[events["event"] == "search"].merge(catalogue[["item_id", "category"]], on="item_id")
    nouns = {cat.name: cat.query_noun for cat in CATEGORIES}
    assert all(
        nouns[category] in query
        for query, category in zip(searches["query"], searches["category"], strict=True)
    )
    assert (searches["query"] == searches["query"].str.lower()).all()
    assert searches["query"].nunique() > 100
    assert (events.loc[events["event"] != "search", "query"] == "").all()


def test_written_shop_loads_with_nothing_quarantined(tmp_path, shop):
    catalogue_path, events_path = write_shop(tmp_path / "shop", SMALL)
    assert (catalogue_path.name, events_path.name) == ("catalogue.csv", "events.csv")
    generated_catalogue, generated_events = generate_shop(SMALL)
    catalogue = load_catalogue(catalogue_path)
    pd.testing.assert_frame_equal(catalogue, generated_catalogue)
    events, report = load_events(events_path, catalogue, tmp_path / "quarantine")
    assert report.quarantined == 0 and report.kept == len(generated_events)

    # The full default shop too, written the same way.
    default_catalogue, default_events = shop
    default_catalogue.to_csv(tmp_path / "catalogue.csv", index=False, float_format="%.2f")
    default_events.to_csv(tmp_path / "events.csv", index=False)
    loaded = load_catalogue(tmp_path / "catalogue.csv")
    _, report = load_events(tmp_path / "events.csv", loaded, tmp_path / "quarantine")
    assert (report.read, report.quarantined) == (len(default_events), 0)


def test_next_category_is_usually_a_complement(shop, sequences):
    """Sequences carry structure text similarity does not: tent -> sleeping bag -> headlamp."""
    category = shop[0]["category"].to_numpy()
    complement = changes = 0
    chance = 0.0
    for items in sequences.values():
        for before, after in zip(items, items[1:], strict=False):
            if category[before] != category[after]:
                changes += 1
                complement += category[after] in COMPLEMENTS[category[before]]
                chance += len(COMPLEMENTS[category[before]]) / (len(CATEGORIES) - 1)
    assert changes > 1000
    assert complement / changes > 0.5
    assert complement / changes > 5 * chance / changes


def test_users_are_brand_loyal(shop, sequences):
    """Consecutive items from one department share a brand far more often than random picks would."""
    catalogue = shop[0]
    brand, category = catalogue["brand"].to_numpy(), catalogue["category"].to_numpy()
    same = pairs = 0
    for items in sequences.values():
        for before, after in zip(items, items[1:], strict=False):
            if DEPARTMENT[category[before]] == DEPARTMENT[category[after]]:
                pairs += 1
                same += brand[before] == brand[after]
    departments = catalogue.assign(department=catalogue["category"].map(DEPARTMENT))
    brand_shares = departments.groupby("department")["brand"].value_counts(normalize=True)
    chance = brand_shares.pow(2).groupby(level=0).sum()  # P(two random items of a department share a brand)
    assert same / pairs > 2 * chance.max()


def test_popularity_is_skewed_within_categories(shop):
    catalogue, events = shop
    engaged = events[events["event"].isin(ENGAGEMENT)]["item_id"].value_counts()
    for _, items in catalogue.groupby("category"):
        counts = engaged.reindex(items["item_id"]).fillna(0).sort_values(ascending=False).to_numpy()
        top_tenth = counts[: len(counts) // 10].sum() / counts.sum()
        assert top_tenth > 0.3  # uniform popularity would give about 0.1


def test_too_few_items_is_rejected():
    with pytest.raises(ValueError, match="n_items"):
        generate_shop(ShopConfig(n_items=10))
