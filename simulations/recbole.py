"""Real benchmark data: a RecBole / UniSRec "atomic" dataset folder loaded as fedrec data.

A folder holds, for one dataset `<name>` (tab-separated, UTF-8):

- `<name>.text`          header `item_id:token  text:token_seq`: ASIN -> item text
- `<name>.item2index`    no header: ASIN -> integer item index (0..n-1) used by the .inter files
- `<name>.user2index`    no header: user id -> integer user index used by the .inter files
- `<name>.train.inter`   header `user_id:token  item_id_list:token_seq  item_id:token`: every prefix of each
                         user's training part (history space-separated, truncated to its last H items; target)
- `<name>.valid.inter`   same header, one row per user: history, second-to-last item
- `<name>.test.inter`    same header, one row per user: history (last H items), last item
- `<name>.sequences.tsv` optional, header `user_asin  item_asins_chronological`: each user's full sequence

Item tokens in an .inter file may be item indices (as UniSRec writes them) or ASINs; which one is
decided per file by which reading resolves more of its tokens, and the choice is reported. The same
goes for user tokens. The catalogue is public and loaded strictly: any defect in .text/.item2index/
.user2index raises SchemaError. A user whose rows cannot be trusted (unknown user or item, a missing
valid/test row, or rows that contradict each other) is set aside whole, counted by reason, and listed
in the report (and in `<quarantine_dir>/<name>.quarantine.csv` when a quarantine_dir is given).

The split is the dataset's own: valid target and test target are the .valid.inter/.test.inter targets,
train is the full chronological sequence before the valid target (from .sequences.tsv when present,
otherwise rebuilt from the .train.inter prefixes), and every file must agree with it. Sequences are
kept exactly as published: unlike `shared.sequences.interaction_sequences`, repeated items are NOT
removed, so a valid or test target can already be in the user's history (counted in the report).

The events frame is synthesised from the kept sequences so partitioning and client files work as for
any fedrec data. Its timestamps are ORDINAL, not real: the k-th item of a user's sequence (k from 0)
gets `shared.schema.PLAUSIBLE_SINCE` + k seconds (inside the loaders' plausibility window); only the order
within a user means anything.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shared.data import UserData
from shared.schema import CATALOGUE_COLUMNS, EVENTS_COLUMNS, PLAUSIBLE_SINCE, SchemaError

REQUIRED_SUFFIXES = (".text", ".item2index", ".user2index", ".train.inter", ".valid.inter", ".test.inter")
SEQUENCES_SUFFIX = ".sequences.tsv"
TEXT_COLUMNS = ("item_id:token", "text:token_seq")
INTER_COLUMNS = ("user_id:token", "item_id_list:token_seq", "item_id:token")
SEQUENCE_COLUMNS = ("user_asin", "item_asins_chronological")

# In the order they are checked: a user is set aside for the first one that applies.
SET_ASIDE_REASONS = ("unknown_user", "unknown_item", "missing_split", "inconsistent_split")
QUARANTINE_COLUMNS = ("user_id", "reason", "file", "row", "column", "detail", "interactions")
_EXAMPLES = 5
_UNKNOWN = -1


@dataclass
class AtomicDataset:
    name: str
    catalogue: pd.DataFrame  # fedrec catalogue schema; row i is item index i of the .inter files
    users: UserData  # the dataset's own leave-one-out split, catalogue indices, users sorted
    events: pd.DataFrame  # fedrec events schema, one "purchase" per interaction, ORDINAL timestamps
    report: dict  # counts of what was read, kept and set aside (with reasons and examples)


@dataclass
class _Row:
    file: str
    row: int  # 1-based data row, header excluded
    history: tuple[int, ...]
    target: int
    unknown: list[str]  # item tokens that are not in the catalogue


@dataclass
class _Tokens:
    """How a file's user and item tokens were read, and the longest history in it."""

    items: str = "index"
    users: str = "index"
    max_history: int = 0


def load_atomic(
    folder: str | Path, name: str | None = None, quarantine_dir: str | Path | None = None
) -> AtomicDataset:
    """Load `<folder>/<name>.*` (name defaults to the one dataset stem found in the folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SchemaError(str(folder), "no such dataset folder")
    name = name or _dataset_name(folder)
    paths = {suffix: folder / f"{name}{suffix}" for suffix in (*REQUIRED_SUFFIXES, SEQUENCES_SUFFIX)}
    for suffix in REQUIRED_SUFFIXES:
        if not paths[suffix].is_file():
            raise SchemaError(paths[suffix].name, f"missing file (looked in {folder})")

    asins = _index_file(paths[".item2index"], dense=True)
    catalogue = _catalogue(paths[".text"], asins)
    item_by = {"index": {str(i): i for i in range(len(asins))}, "asin": {a: i for i, a in enumerate(asins)}}
    user_ids = _index_file(paths[".user2index"], dense=False)
    user_by = {"index": {str(i): u for i, u in user_ids.items()}, "asin": {u: u for u in user_ids.values()}}

    rows: dict[str, dict[str, list[_Row]]] = defaultdict(lambda: defaultdict(list))
    unknown_users: dict[str, tuple[str, int, str]] = {}
    formats: dict[str, _Tokens] = {}
    unknown_item_rows: dict[str, int] = {}
    files = [(".train.inter", "train"), (".valid.inter", "valid"), (".test.inter", "test")]
    has_sequences = paths[SEQUENCES_SUFFIX].is_file()
    if has_sequences:
        files.append((SEQUENCES_SUFFIX, "sequence"))
    for suffix, part in files:
        path = paths[suffix]
        tokens, parsed = _read_rows(path, item_by, user_by)
        formats[path.name] = tokens
        unknown_item_rows[path.name] = 0
        for user, raw_user, row in parsed:
            if user is None:
                user = f"#{raw_user}" if tokens.users == "index" else raw_user
                unknown_users.setdefault(user, (path.name, row.row, raw_user))
            rows[user][part].append(row)
            unknown_item_rows[path.name] += bool(row.unknown)

    max_history = {part: formats[paths[suffix].name].max_history for suffix, part in files}
    kept: dict[str, list[int]] = {}
    set_aside: list[dict] = []
    interactions_read = 0
    for user in sorted(set(rows) | set(user_ids.values())):
        parts = rows.get(user, {})
        sequence, problem = _assemble(user, parts, has_sequences, max_history, unknown_users, name)
        count = _interaction_count(parts, sequence, has_sequences, max_history["train"])
        interactions_read += count
        if problem is None:
            kept[user] = sequence
        else:
            set_aside.append({"user_id": user, **problem, "interactions": count})

    users = sorted(kept)
    data = UserData(
        users=users,
        train=[kept[u][:-2] for u in users],
        valid=[kept[u][-2] for u in users],
        test=[kept[u][-1] for u in users],
        too_short=[],
    )
    events = _events(users, [kept[u] for u in users], catalogue["item_id"].to_numpy())
    report = _report(
        name,
        catalogue,
        data,
        events,
        set_aside,
        interactions_read,
        len(user_ids),
        formats,
        unknown_item_rows,
        has_sequences,
        quarantine_dir,
    )
    return AtomicDataset(name=name, catalogue=catalogue, users=data, events=events, report=report)


def _dataset_name(folder: Path) -> str:
    stems = {
        p.name[: -len(suffix)]
        for p in folder.iterdir()
        for suffix in (*REQUIRED_SUFFIXES, SEQUENCES_SUFFIX)
        if p.name.endswith(suffix)
    }
    stems.discard("")
    if len(stems) != 1:
        found = ", ".join(sorted(stems)) if stems else "none"
        raise SchemaError(
            str(folder), f"expected the files of exactly one atomic dataset (found: {found}); pass name="
        )
    return stems.pop()


def _read_tsv(path: Path, columns: tuple[str, ...] | None, width: int | None = None) -> pd.DataFrame:
    """Every cell as stripped text; `columns` are required header names, or None for a headerless file."""
    try:
        frame = pd.read_csv(
            path,
            sep="\t",
            header=0 if columns else None,
            dtype=str,
            keep_default_na=False,
            quoting=csv.QUOTE_NONE,
            encoding="utf-8",
        )
    except pd.errors.EmptyDataError:
        raise SchemaError(path.name, "file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise SchemaError(path.name, f"cannot be read as tab-separated UTF-8 text: {error}") from None
    if columns:
        frame.columns = [str(c).strip() for c in frame.columns]
        for column in columns:
            if column not in frame.columns:
                found = ", ".join(frame.columns)
                raise SchemaError(path.name, f"missing header column (found: {found})", column=column)
    elif width is not None and frame.shape[1] != width:
        raise SchemaError(
            path.name, f"expected {width} tab-separated fields per line, found {frame.shape[1]}"
        )
    return frame.fillna("").apply(lambda values: values.str.strip())


def _index_file(path: Path, dense: bool) -> list[str] | dict[int, str]:
    """<token> TAB <index> lines; `dense` requires indices 0..n-1 and returns tokens in index order."""
    frame = _read_tsv(path, None, width=2)
    tokens, text = frame[0], frame[1]
    numbers = pd.to_numeric(text.where(text.str.fullmatch(r"\d+"), ""), errors="coerce")
    for column, bad, message in (
        ("token", tokens == "", "empty token"),
        ("index", numbers.isna(), "not a non-negative integer index"),
    ):
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            value = frame.iat[row, 0 if column == "token" else 1]
            raise SchemaError(path.name, f"{message}: {value!r}", row=row + 1, column=column)
    numbers = numbers.astype(np.int64)
    for column, values in (("token", tokens), ("index", numbers)):
        repeated = values.duplicated()
        if repeated.any():
            row = int(np.flatnonzero(repeated.to_numpy())[0])
            raise SchemaError(
                path.name, f"duplicate {column} {values.iat[row]!r}", row=row + 1, column=column
            )
    if not dense:
        return dict(zip(numbers.tolist(), tokens.tolist(), strict=True))
    if len(numbers) and (numbers.min() != 0 or numbers.max() != len(numbers) - 1):
        raise SchemaError(
            path.name,
            f"item indices must be 0..{len(numbers) - 1}, found {numbers.min()}..{numbers.max()}",
            column="index",
        )
    ordered = [""] * len(numbers)
    for token, index in zip(tokens, numbers, strict=True):
        ordered[index] = token
    return ordered


def _catalogue(path: Path, asins: list[str]) -> pd.DataFrame:
    """The catalogue in item-index order; .text and .item2index must list exactly the same items."""
    frame = _read_tsv(path, TEXT_COLUMNS)
    items, texts = frame[TEXT_COLUMNS[0]], frame[TEXT_COLUMNS[1]]
    for column, bad, message in (
        (TEXT_COLUMNS[0], items == "", "empty item id"),
        (TEXT_COLUMNS[1], texts == "", "empty text for item"),
        (TEXT_COLUMNS[0], items.duplicated(), "duplicate item"),
    ):
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            message = f"{message} {items.iat[row]!r}" if items.iat[row] else message
            raise SchemaError(path.name, message, row=row + 1, column=column)
    text_of = dict(zip(items, texts, strict=True))
    missing = [asin for asin in asins if asin not in text_of]
    if missing:
        raise SchemaError(
            path.name,
            f"{len(missing)} item(s) of the item2index file have no text, e.g. {missing[:3]}",
            column=TEXT_COLUMNS[0],
        )
    extra = sorted(set(text_of) - set(asins))
    if extra:
        row = int(np.flatnonzero(items.isin(extra).to_numpy())[0])
        raise SchemaError(
            path.name,
            f"{len(extra)} item(s) not in the item2index file, e.g. {extra[:3]}",
            row=row + 1,
            column=TEXT_COLUMNS[0],
        )
    catalogue = pd.DataFrame(
        {
            "item_id": asins,
            "title": [text_of[a] for a in asins],
            "brand": "",
            "category": "",
            "price": np.nan,
            "description": "",
        }
    )
    for column in ("item_id", "title", "brand", "category", "description"):
        catalogue[column] = catalogue[column].astype(str)
    catalogue["price"] = catalogue["price"].astype(float)
    return catalogue[list(CATALOGUE_COLUMNS)]


def _read_rows(path: Path, item_by: dict[str, dict[str, int]], user_by: dict[str, dict[str, str]]):
    """(tokens, [(user or None, raw user token, _Row)]) for an .inter file or the sequences file."""
    is_sequences = path.name.endswith(SEQUENCES_SUFFIX)
    frame = _read_tsv(path, SEQUENCE_COLUMNS if is_sequences else INTER_COLUMNS)
    if is_sequences:
        (raw_users, lists), targets = (frame[c].tolist() for c in SEQUENCE_COLUMNS), None
    else:
        raw_users, lists, targets = (frame[c].tolist() for c in INTER_COLUMNS)
        if "" in targets:
            raise SchemaError(path.name, "empty target", row=targets.index("") + 1, column=INTER_COLUMNS[2])
    histories = [text.split() for text in lists]
    all_items = [t for h in histories for t in h] + (targets or [])
    tokens = _Tokens(
        items=_format(all_items, item_by),
        users=_format(raw_users, user_by),
        max_history=max(map(len, histories), default=0),
    )
    lookup, users = item_by[tokens.items], user_by[tokens.users]
    parsed = []
    for i, (raw_user, history) in enumerate(zip(raw_users, histories, strict=True)):
        if targets is not None:
            history = [*history, targets[i]]
        indices = [lookup.get(t, _UNKNOWN) for t in history]
        unknown = [t for t, index in zip(history, indices, strict=True) if index == _UNKNOWN]
        if targets is None:
            row = _Row(path.name, i + 1, tuple(indices), _UNKNOWN, unknown)
        else:
            row = _Row(path.name, i + 1, tuple(indices[:-1]), indices[-1], unknown)
        parsed.append((users.get(raw_user), raw_user, row))
    return tokens, parsed


def _format(tokens: list[str], by: dict[str, dict]) -> str:
    """Which reading, "index" or "asin", resolves more of the tokens (index on a tie)."""
    hits = {kind: sum(t in lookup for t in tokens) for kind, lookup in by.items()}
    return "asin" if hits["asin"] > hits["index"] else "index"


def _assemble(
    user: str,
    parts: dict[str, list[_Row]],
    has_sequences: bool,
    max_history: dict[str, int],
    unknown_users: dict[str, tuple[str, int, str]],
    name: str,
) -> tuple[list[int], dict | None]:
    """The user's full sequence, and why the user must be set aside (None if it need not)."""
    if user in unknown_users:
        file, row, raw = unknown_users[user]
        detail = f"user {raw!r} is not in {name}.user2index"
        column = SEQUENCE_COLUMNS[0] if file.endswith(SEQUENCES_SUFFIX) else INTER_COLUMNS[0]
        return [], _problem("unknown_user", file, row, column, detail)
    for part in ("sequence", "train", "valid", "test"):
        for r in parts.get(part, []):
            if r.unknown:
                column = INTER_COLUMNS[1] if _UNKNOWN in r.history else INTER_COLUMNS[2]
                column = SEQUENCE_COLUMNS[1] if part == "sequence" else column
                return [], _problem(
                    "unknown_item",
                    r.file,
                    r.row,
                    column,
                    f"item(s) {r.unknown[:3]} not in {name}.item2index/{name}.text",
                )
    for part in ("valid", "test"):
        found = parts.get(part, [])
        if not found:
            return [], _problem("missing_split", f"{name}.{part}.inter", None, None, f"no {part} row")
        if len(found) > 1:
            return [], _problem(
                "inconsistent_split", found[1].file, found[1].row, None, f"{len(found)} {part} rows"
            )
    valid, test = parts["valid"][0], parts["test"][0]
    train_rows = parts.get("train", [])
    if has_sequences:
        found = parts.get("sequence", [])
        if len(found) != 1:
            where = (found[1].file, found[1].row) if found else (f"{name}{SEQUENCES_SUFFIX}", None)
            return [], _problem(
                "inconsistent_split", *where, None, f"{len(found)} rows in the sequences file"
            )
        sequence = list(found[0].history)
    else:
        sequence = _chain(train_rows, max_history["train"]) or list(valid.history)
        sequence += [valid.target, test.target]
    problem = _check(sequence, valid, test, train_rows, max_history)
    return sequence, problem


def _chain(rows: list[_Row], window: int) -> list[int]:
    """The training part rebuilt from its prefix rows (histories truncated to `window` items)."""
    if not rows:
        return []
    pool: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for r in rows:
        pool[r.history].append(r.target)
    sequence = list(min(rows, key=lambda r: len(r.history)).history)
    while pool.get(key := tuple(sequence[-window:])):
        sequence.append(pool[key].pop(0))
    return sequence


def _check(
    sequence: list[int], valid: _Row, test: _Row, train_rows: list[_Row], max_history: dict[str, int]
) -> dict | None:
    """The first way the rows disagree with `sequence` (valid/test = its last two items), or None."""
    if len(sequence) < 3:
        return _problem(
            "inconsistent_split",
            valid.file,
            valid.row,
            None,
            f"sequence of {len(sequence)} item(s); train, valid and test need 3",
        )
    for r, target, before in ((valid, sequence[-2], sequence[:-2]), (test, sequence[-1], sequence[:-1])):
        part = "valid" if r is valid else "test"
        if r.target != target:
            return _problem(
                "inconsistent_split",
                r.file,
                r.row,
                INTER_COLUMNS[2],
                f"{part} target is not the {'second-to-' if r is valid else ''}last item of the "
                "user's sequence",
            )
        if r.history != tuple(before[-max_history[part] :]):
            return _problem(
                "inconsistent_split",
                r.file,
                r.row,
                INTER_COLUMNS[1],
                f"{part} history is not the end of the sequence before its target",
            )
    train = sequence[:-2]
    window = max_history["train"]
    expected = sorted((tuple(train[max(0, k - window) : k]), train[k]) for k in range(1, len(train)))
    found = sorted((r.history, r.target) for r in train_rows)
    if found != expected:
        where = train_rows[0] if train_rows else valid
        file = where.file if train_rows else where.file.replace(".valid.inter", ".train.inter")
        return _problem(
            "inconsistent_split",
            file,
            where.row if train_rows else None,
            None,
            f"{len(found)} training prefix row(s) do not match the {len(expected)} expected "
            f"from the training part ({len(train)} items)",
        )
    return None


def _problem(reason: str, file: str, row: int | None, column: str | None, detail: str) -> dict:
    return {"reason": reason, "file": file, "row": row, "column": column, "detail": detail}


def _interaction_count(
    parts: dict[str, list[_Row]], sequence: list[int], has_sequences: bool, window: int
) -> int:
    """How many interactions the user has, as far as the files tell (the sequences file, if any, rules)."""
    if sequence:
        return len(sequence)
    if has_sequences:
        found = parts.get("sequence", [])
        return len(found[0].history) if found else 0
    valid, test = parts.get("valid", []), parts.get("test", [])
    train = _chain(parts.get("train", []), window) or (valid[0].history if valid else ())
    return len(train) + bool(valid) + bool(test)


def _events(users: list[str], sequences: list[list[int]], asins: np.ndarray) -> pd.DataFrame:
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    items = (
        np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
        if sequences
        else np.array([], dtype=np.int64)
    )
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = np.arange(len(items), dtype=np.int64) - starts
    events = pd.DataFrame(
        {
            "user_id": np.repeat(np.array(users, dtype=object), lengths).astype(str),
            "item_id": asins[items].astype(str) if len(items) else np.array([], dtype=str),
            "event": "purchase",
            "timestamp": (PLAUSIBLE_SINCE + pd.to_timedelta(positions, unit="s")).astype(
                "datetime64[ns, UTC]"
            ),
            "query": "",
        }
    )
    for column in ("user_id", "item_id", "event", "query"):
        events[column] = events[column].astype(str)
    return events[list(EVENTS_COLUMNS)]


def _report(
    name,
    catalogue,
    data: UserData,
    events,
    set_aside,
    interactions_read,
    users_listed,
    formats,
    unknown_item_rows,
    has_sequences,
    quarantine_dir,
) -> dict:
    reasons = {reason: sum(e["reason"] == reason for e in set_aside) for reason in SET_ASIDE_REASONS}
    interactions_set_aside = sum(e["interactions"] for e in set_aside)
    report = {
        "name": name,
        "items": len(catalogue),
        "users": len(data.users),
        "interactions": len(events),
        "users_read": len(data.users) + len(set_aside),
        "users_in_user2index": users_listed,
        "interactions_read": interactions_read,
        "users_set_aside": len(set_aside),
        "interactions_set_aside": interactions_set_aside,
        "set_aside_reasons": reasons,
        "unknown_item_rows": unknown_item_rows,
        "examples": set_aside[:_EXAMPLES],
        "quarantine_file": _write_quarantine(set_aside, quarantine_dir, name),
        "sequence_source": f"{name}{SEQUENCES_SUFFIX}" if has_sequences else f"{name}.train.inter (rebuilt)",
        "token_format": {file: {"items": t.items, "users": t.users} for file, t in formats.items()},
        "max_history": {file: t.max_history for file, t in formats.items()},
        "timestamps": f"ordinal: {PLAUSIBLE_SINCE.isoformat()} + k s is the k-th item of a user's sequence",
        "data_notes": _data_notes(data),
    }
    if report["users_read"] != report["users"] + report["users_set_aside"] or (
        interactions_read != report["interactions"] + interactions_set_aside
    ):
        raise AssertionError(f"{name}: users or interactions do not reconcile: {report}")
    return report


def _data_notes(data: UserData) -> dict:
    """Properties of the published split that matter when evaluating on it."""
    sequences = [t + [v, s] for t, v, s in zip(data.train, data.valid, data.test, strict=True)]
    repeats = [len(s) - len(set(s)) for s in sequences]
    return {
        "users_with_repeated_items": sum(r > 0 for r in repeats),
        "repeated_interactions": sum(repeats),
        # Under fedrec's protocol (history excluded from the ranking) these targets can never be hit.
        "valid_target_in_history": sum(v in set(t) for t, v in zip(data.train, data.valid, strict=True)),
        "test_target_in_history": sum(
            s in set(t) or s == v for t, v, s in zip(data.train, data.valid, data.test, strict=True)
        ),
    }


def _write_quarantine(set_aside: list[dict], quarantine_dir, name: str) -> str | None:
    if quarantine_dir is None:
        return None
    target = Path(quarantine_dir) / f"{name}.quarantine.csv"
    if not set_aside:
        target.unlink(missing_ok=True)
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(set_aside, columns=list(QUARANTINE_COLUMNS))
    frame["row"] = frame["row"].astype("Int64")
    frame.to_csv(target, index=False)
    return str(target)


def write_user_subset(folder: str | Path, out: str | Path, users: list[str], name: str | None = None) -> Path:
    """Copy `<folder>/<name>.*` to `out`, keeping only the rows of `users` (ids as in .user2index).

    Rows are copied verbatim, so the subset keeps the dataset's own split; the item files are copied
    whole, so a subset still ranks over ALL items. Used for quick benchmark runs on fewer users.
    """
    folder, out = Path(folder), Path(out)
    name = name or _dataset_name(folder)
    out.mkdir(parents=True, exist_ok=True)
    keep_ids = set(users)
    index_of = {str(i): u for i, u in _index_file(folder / f"{name}.user2index", dense=False).items()}
    unknown = keep_ids - set(index_of.values())
    if unknown:
        raise SchemaError(
            f"{name}.user2index", f"{len(unknown)} user(s) not in the dataset, e.g. {sorted(unknown)[:3]}"
        )
    keep_tokens = keep_ids | {i for i, u in index_of.items() if u in keep_ids}
    for suffix in (*REQUIRED_SUFFIXES, SEQUENCES_SUFFIX):
        source = folder / f"{name}{suffix}"
        if not source.is_file():
            continue
        lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
        if suffix in (".text", ".item2index"):
            kept = lines
        elif suffix == ".user2index":
            kept = [line for line in lines if line.split("\t", 1)[0].strip() in keep_ids]
        else:  # header, then rows whose first field is a kept user (index or id)
            kept = lines[:1] + [line for line in lines[1:] if line.split("\t", 1)[0].strip() in keep_tokens]
        (out / source.name).write_text("".join(kept), encoding="utf-8")
    return out


__all__ = ["AtomicDataset", "load_atomic", "write_user_subset", "SET_ASIDE_REASONS"]
