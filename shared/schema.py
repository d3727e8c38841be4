"""The two inputs of fedrec and how they are validated.

The item catalogue is public (every client and the server share it), so it is
loaded strictly: one bad row means the universe of items is wrong, and we stop.
Behaviour logs are private and messy, so a bad row is set aside in a quarantine
file with the reason, and the load goes on; the LoadReport accounts for every row.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "search")

CATALOGUE_REQUIRED = ("item_id", "title")
CATALOGUE_COLUMNS = ("item_id", "title", "brand", "category", "price", "description")
EVENTS_REQUIRED = ("user_id", "item_id", "event", "timestamp")
EVENTS_COLUMNS = ("user_id", "item_id", "event", "timestamp", "query")

# In the order they are checked: a row is quarantined for the first one it fails.
QUARANTINE_REASONS = {
    "missing_user": "user_id",
    "unknown_item": "item_id",
    "unknown_event": "event",
    "bad_timestamp": "timestamp",
    "missing_query": "query",
    "duplicate": None,
}

# Epoch seconds beyond this do not fit datetime64[ns] (year 2262).
_MAX_EPOCH_SECONDS = 9.2e9


class SchemaError(ValueError):
    """A file that cannot be used as it is; says where, so it can be fixed."""

    def __init__(self, file: str, message: str, row: int | None = None, column: str | None = None):
        self.file = file
        self.row = row  # 1-based data row, header excluded
        self.column = column
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [self.file]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.message}"


@dataclass
class LoadReport:
    """What happened to every row of an events file, so nothing disappears unnoticed."""

    file: str
    read: int
    kept: int
    quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)
    quarantine_file: str | None = None

    def __post_init__(self) -> None:
        if self.read != self.kept + self.quarantined or sum(self.reasons.values()) != self.quarantined:
            raise AssertionError(f"{self.file}: rows do not reconcile: {self.to_dict()}")

    def to_dict(self) -> dict:
        return asdict(self)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a .csv (every column as text, empty cells as "") or a .parquet file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    if suffix == ".parquet":
        return pd.read_parquet(path)
    raise SchemaError(path.name, f"unsupported file type {suffix or '(none)'!r}; expected .csv or .parquet")


def load_catalogue(path: str | Path) -> pd.DataFrame:
    """Load the public item catalogue; any defect raises SchemaError naming file, row and column."""
    name = Path(path).name
    raw = read_table(path).reset_index(drop=True)
    _require_columns(raw, CATALOGUE_REQUIRED, name)

    out = pd.DataFrame(index=raw.index)
    for column in ("item_id", "title", "brand", "category", "description"):
        out[column] = _text(raw[column]) if column in raw.columns else ""
    for column in CATALOGUE_REQUIRED:
        empty = out.index[out[column] == ""]
        if len(empty):
            raise SchemaError(name, f"{column} is empty", row=int(empty[0]) + 1, column=column)

    duplicated = out["item_id"].duplicated()
    if duplicated.any():
        row = int(out.index[duplicated][0])
        first = int(out.index[out["item_id"] == out.at[row, "item_id"]][0])
        message = f"duplicate item_id {out.at[row, 'item_id']!r} (first seen in row {first + 1})"
        raise SchemaError(name, message, row=row + 1, column="item_id")

    prices = raw["price"] if "price" in raw.columns else pd.Series(float("nan"), index=raw.index)
    out["price"] = [_price(value, name, row + 1) for row, value in enumerate(prices)]
    out = out[list(CATALOGUE_COLUMNS)].reset_index(drop=True)
    for column in ("item_id", "title", "brand", "category", "description"):
        out[column] = out[column].astype(str)
    out["price"] = out["price"].astype(float)
    return out


def load_events(
    path: str | Path, catalogue: pd.DataFrame, quarantine_dir: str | Path
) -> tuple[pd.DataFrame, LoadReport]:
    """Load behaviour logs; bad rows go to <quarantine_dir>/<stem>.quarantine.csv with their reason.

    A duplicate is a row equal to an earlier kept row once parsed (same user, item, event,
    instant and query), so "2026-01-01T00:00:00Z" and 1767225600 are the same event.
    """
    path = Path(path)
    raw = read_table(path).reset_index(drop=True)
    _require_columns(raw, EVENTS_REQUIRED, path.name)

    events = pd.DataFrame(index=raw.index)
    for column in ("user_id", "item_id", "event"):
        events[column] = _text(raw[column])
    events["timestamp"] = _timestamps(raw["timestamp"])
    events["query"] = _text(raw["query"]) if "query" in raw.columns else ""

    failed = {
        "missing_user": events["user_id"] == "",
        "unknown_item": ~events["item_id"].isin(set(catalogue["item_id"])),
        "unknown_event": ~events["event"].isin(EVENT_TYPES),
        "bad_timestamp": events["timestamp"].isna(),
        "missing_query": (events["event"] == "search") & (events["query"] == ""),
    }
    reason = pd.Series("", index=raw.index, dtype=object)
    for name, mask in failed.items():
        reason[(reason == "") & mask] = name
    # Only rows that would otherwise be kept can duplicate a kept row.
    repeats = events[reason == ""].duplicated(keep="first").reindex(raw.index, fill_value=False)
    reason[repeats] = "duplicate"

    kept_mask = reason == ""
    quarantine_file = _write_quarantine(raw, reason, Path(quarantine_dir) / f"{path.stem}.quarantine.csv")
    counts = reason[~kept_mask].value_counts()
    report = LoadReport(
        file=path.name,
        read=len(raw),
        kept=int(kept_mask.sum()),
        quarantined=int((~kept_mask).sum()),
        reasons={name: int(counts.get(name, 0)) for name in QUARANTINE_REASONS},
        quarantine_file=quarantine_file,
    )

    kept = events[kept_mask].sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    for column in ("user_id", "item_id", "event", "query"):
        kept[column] = kept[column].astype(str)
    return kept[list(EVENTS_COLUMNS)], report


def item_texts(catalogue: pd.DataFrame) -> list[str]:
    """The text the encoder reads for each item: "title. brand. category", empty parts skipped."""
    texts = []
    columns = (catalogue["title"], catalogue["brand"], catalogue["category"])
    for title, brand, category in zip(*columns, strict=True):
        parts = [str(part).strip() for part in (title, brand, category)]
        texts.append(". ".join(part for part in parts if part))
    return texts


def _require_columns(frame: pd.DataFrame, required: tuple[str, ...], file: str) -> None:
    for column in required:
        if column not in frame.columns:
            raise SchemaError(
                file, f"missing required column (found: {', '.join(map(str, frame.columns))})", column=column
            )


def _text(values: pd.Series) -> pd.Series:
    """Cells as stripped strings; missing cells (None/NaN from parquet) become ""."""
    return values.astype(object).where(values.notna(), "").astype(str).str.strip()


def _price(value: object, file: str, row: int) -> float:
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return float("nan")
    try:
        price = float(str(value).strip())
    except ValueError:
        price = float("nan")
    if not math.isfinite(price) or price < 0:
        raise SchemaError(file, f"price {value!r} is not a non-negative number", row=row, column="price")
    return price


def _timestamps(values: pd.Series) -> pd.Series:
    """Parse ISO-8601 text or epoch seconds to UTC; anything else becomes NaT."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    text = _text(values)
    seconds = pd.to_numeric(text, errors="coerce")
    seconds = seconds.where(seconds.abs() < _MAX_EPOCH_SECONDS)
    from_epoch = pd.to_datetime(seconds, unit="s", utc=True, errors="coerce").astype("datetime64[ns, UTC]")
    from_iso = pd.to_datetime(text.where(seconds.isna(), ""), format="ISO8601", utc=True, errors="coerce")
    return from_epoch.fillna(from_iso.astype("datetime64[ns, UTC]"))


def _write_quarantine(raw: pd.DataFrame, reason: pd.Series, target: Path) -> str | None:
    """Write the set-aside rows; remove a stale file so the disk agrees with the report."""
    bad = reason != ""
    if not bad.any():
        target.unlink(missing_ok=True)
        return None
    out = raw[bad].copy()
    out["row"] = out.index + 1
    out["reason"] = reason[bad]
    out["column"] = [QUARANTINE_REASONS[name] or "" for name in reason[bad]]
    target.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(target, index=False)
    return str(target)
