"""The embedded default shop generator, kept under its old name for the simulation driver and tests.

The generator itself is public and lives in `shared/shop.py`, so that the ServerApp and ClientApp can
derive the embedded shop without importing the simulation driver (`shared/embedded.py`).
"""

from shared.shop import CATEGORIES, COMPLEMENTS, ShopConfig, generate_shop, write_shop

__all__ = ["CATEGORIES", "COMPLEMENTS", "ShopConfig", "generate_shop", "write_shop"]
