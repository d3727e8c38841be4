"""The published items as the device shows them: one result is a Recommendation.

The display columns are read out of the items table once, at load: a result row then costs a list
lookup, where `DataFrame.iloc` cost ~0.1 ms per row (1 ms of a 2 ms budget for ten results).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from client.device.intent import Reason


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    title: str
    score: float
    brand: str = ""
    category: str = ""
    price: float | None = None
    # filled when an explanation is asked for (intent.py); a trending result always carries its one reason
    reasons: tuple[Reason, ...] = ()


class ItemTable:
    def __init__(self, items: pd.DataFrame) -> None:
        def texts(column: str) -> list[str]:
            if column not in items.columns:
                return [""] * len(items)
            return ["" if pd.isna(value) else str(value) for value in items[column].tolist()]

        self.ids, self.titles = texts("item_id"), texts("title")
        self.brands, self.categories = texts("brand"), texts("category")
        prices = items["price"] if "price" in items.columns else pd.Series(np.nan, index=items.index)
        self.prices = pd.to_numeric(prices, errors="coerce").to_numpy(dtype=np.float64)

    def __len__(self) -> int:
        return len(self.ids)

    def result(self, row: int, score: float, reasons: tuple[Reason, ...] = ()) -> Recommendation:
        price = self.prices[row]
        return Recommendation(
            item_id=self.ids[row],
            title=self.titles[row],
            score=score,
            brand=self.brands[row],
            category=self.categories[row],
            price=None if np.isnan(price) else float(price),
            reasons=reasons,
        )
