"""The embedded default shop: a seeded, realistic small store (outdoors, electronics, kitchen, home, sports).

It is fedrec's demo data, so it has the structure a sequential recommender should
find and text similarity alone cannot: complementary purchases (tent, then sleeping
bag, then headlamp), brand loyalty, price bands, and tastes that drift over time.
Everything is drawn from one numpy Generator seeded by the config, so the same
config always produces the same shop. It lives in shared/ because it is public: every
party can derive it itself (`shared/embedded.py`, what `flwr run .` trains on as shipped).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shared.schema import EVENT_TYPES

VIEW, CLICK, CART, PURCHASE, SEARCH = range(len(EVENT_TYPES))  # positions in EVENT_TYPES
TIERS = ("budget", "mid", "premium")
TIER_PRICE_FACTOR = (0.6, 1.0, 1.7)
TIER_SHARE = (0.35, 0.45, 0.20)  # of shoppers

# department -> brands with their price tier (invented names)
BRANDS: dict[str, tuple[tuple[str, str], ...]] = {
    "Outdoors": (
        ("Northpeak", "premium"),
        ("Trailforge", "mid"),
        ("Alpenwick", "premium"),
        ("Cairnstone", "mid"),
        ("Wildmere", "budget"),
        ("Campvale", "budget"),
        ("Fernhollow", "mid"),
    ),
    "Electronics": (
        ("Sonareo", "premium"),
        ("Voltis", "budget"),
        ("Lumetric", "mid"),
        ("Pixelcraft", "premium"),
        ("Auralink", "mid"),
        ("Kinetra", "budget"),
        ("Brightwave", "mid"),
        ("Orbix", "budget"),
    ),
    "Kitchen": (
        ("Brewhaus", "premium"),
        ("Cuisora", "mid"),
        ("Grindwell", "mid"),
        ("Ferrosteel", "premium"),
        ("Copperleaf", "budget"),
        ("Mixwell", "budget"),
    ),
    "Home": (
        ("Hearthly", "mid"),
        ("Duskwood", "premium"),
        ("Linenfield", "premium"),
        ("Glowmere", "budget"),
        ("Nestora", "mid"),
        ("Softhaven", "budget"),
        ("Calmora", "mid"),
    ),
    "Sports & Fitness": (
        ("Stridex", "premium"),
        ("Pulsefit", "mid"),
        ("Ironvale", "budget"),
        ("Flexora", "mid"),
        ("Aquapeak", "budget"),
        ("Sprintor", "premium"),
        ("Corebound", "budget"),
    ),
}


@dataclass(frozen=True)
class Category:
    name: str
    department: str
    base_price: float
    query_noun: str  # what a shopper types
    nouns: tuple[str, ...]
    variants: tuple[str, ...]
    adjectives: tuple[str, ...]
    features: tuple[str, ...]


def _cat(
    name: str,
    department: str,
    base_price: float,
    query_noun: str,
    *,
    nouns: str,
    variants: str,
    adjectives: str,
    features: str,
) -> Category:
    """A category from "|"-separated word lists (an empty entry means "no feature")."""
    lists = (tuple(words.split("|")) for words in (nouns, variants, adjectives, features))
    return Category(name, department, base_price, query_noun, *lists)


CATEGORIES: tuple[Category, ...] = (
    _cat(
        "Tents",
        "Outdoors",
        180,
        "tent",
        nouns="Dome Tent|Backpacking Tent|Tunnel Tent",
        variants="1-Person|2-Person|3-Person|4-Person",
        adjectives="Ultralight|Waterproof|Four-Season|Freestanding|Compact",
        features="with Rainfly|with Footprint|with Vestibule|",
    ),
    _cat(
        "Sleeping Bags",
        "Outdoors",
        120,
        "sleeping bag",
        nouns="Mummy Sleeping Bag|Rectangular Sleeping Bag|Down Sleeping Bag",
        variants="Three-Season|Winter|Summer",
        adjectives="Ultralight|Packable|Synthetic|Hooded|Insulated",
        features="with Compression Sack|with Draft Collar|with Stuff Sack|",
    ),
    _cat(
        "Backpacks",
        "Outdoors",
        110,
        "backpack",
        nouns="Hiking Backpack|Daypack|Trekking Pack",
        variants="20L|35L|50L|65L",
        adjectives="Ventilated|Lightweight|Rugged|Waterproof|Ergonomic",
        features="with Rain Cover|with Hydration Sleeve|with Hip Belt|",
    ),
    _cat(
        "Hiking Boots",
        "Outdoors",
        140,
        "hiking boots",
        nouns="Hiking Boots|Trail Boots|Hiking Shoes",
        variants="Men's|Women's",
        adjectives="Waterproof|Breathable|Leather|Lightweight|Grippy",
        features="with Lugged Sole|with Ankle Support|with Cushioned Insole|",
    ),
    _cat(
        "Headlamps",
        "Outdoors",
        35,
        "headlamp",
        nouns="Headlamp|LED Headlamp|Trail Headlamp",
        variants="300 Lumen|500 Lumen|800 Lumen",
        adjectives="Rechargeable|Waterproof|Compact|Bright|Lightweight",
        features="with Red Light Mode|with USB-C Charging|with Motion Sensor|",
    ),
    _cat(
        "Headphones",
        "Electronics",
        120,
        "headphones",
        nouns="Over-Ear Headphones|Wireless Earbuds|On-Ear Headphones",
        variants="Bluetooth|Wired|Studio",
        adjectives="Noise-Cancelling|Wireless|Foldable|Lightweight|Bass-Boost",
        features="with 30-Hour Battery|with Microphone|with Carry Case|",
    ),
    _cat(
        "Cameras",
        "Electronics",
        600,
        "camera",
        nouns="Mirrorless Camera|Compact Camera|Action Camera",
        variants="20MP|24MP|4K",
        adjectives="Waterproof|Compact|Professional|Vlogging|Retro",
        features="with 18-55mm Lens|with Image Stabilization|with Flip Screen|",
    ),
    _cat(
        "Memory Cards",
        "Electronics",
        25,
        "memory card",
        nouns="SD Card|microSD Card|CFexpress Card",
        variants="64GB|128GB|256GB|512GB",
        adjectives="High-Speed|UHS-II|Durable|Pro|Extreme-Speed",
        features="with Adapter|with Card Reader|",
    ),
    _cat(
        "Tripods",
        "Electronics",
        70,
        "tripod",
        nouns="Travel Tripod|Camera Tripod|Tabletop Tripod",
        variants="Aluminum|Carbon Fiber",
        adjectives="Lightweight|Compact|Sturdy|Adjustable|Foldable",
        features="with Ball Head|with Phone Mount|with Carry Bag|",
    ),
    _cat(
        "Chargers",
        "Electronics",
        30,
        "charger",
        nouns="USB-C Charger|Wall Charger|Power Bank",
        variants="20W|45W|65W|100W",
        adjectives="Fast|Compact|Dual-Port|Travel|GaN",
        features="with Cable|with Foldable Plug|",
    ),
    _cat(
        "Coffee Makers",
        "Kitchen",
        110,
        "coffee maker",
        nouns="Drip Coffee Maker|Espresso Machine|Pour-Over Brewer",
        variants="4-Cup|10-Cup|12-Cup|Single-Serve",
        adjectives="Programmable|Stainless Steel|Compact|Thermal|Barista",
        features="with Milk Frother|with Thermal Carafe|with Timer|",
    ),
    _cat(
        "Coffee Grinders",
        "Kitchen",
        60,
        "coffee grinder",
        nouns="Burr Grinder|Coffee Grinder|Hand Grinder",
        variants="Conical|Stepless|40-Setting",
        adjectives="Precision|Quiet|Compact|Stainless Steel|Adjustable",
        features="with Dosing Cup|with Timer|",
    ),
    _cat(
        "Knives",
        "Kitchen",
        70,
        "chef knife",
        nouns="Chef's Knife|Santoku Knife|Knife Set",
        variants="6-Inch|8-Inch|10-Inch",
        adjectives="Japanese Steel|Forged|Razor-Sharp|Damascus|Ergonomic",
        features="with Sheath|with Magnetic Block|",
    ),
    _cat(
        "Cookware",
        "Kitchen",
        90,
        "pan",
        nouns="Frying Pan|Saucepan|Dutch Oven",
        variants="20cm|24cm|28cm",
        adjectives="Nonstick|Cast Iron|Stainless Steel|Ceramic|Induction-Ready",
        features="with Lid|with Glass Lid|",
    ),
    _cat(
        "Blenders",
        "Kitchen",
        90,
        "blender",
        nouns="Countertop Blender|Personal Blender|Immersion Blender",
        variants="600W|1000W|1500W",
        adjectives="High-Speed|Compact|Quiet|Powerful|Portable",
        features="with Travel Cups|with Tamper|",
    ),
    _cat(
        "Desk Lamps",
        "Home",
        45,
        "desk lamp",
        nouns="Desk Lamp|Reading Lamp|Floor Lamp",
        variants="LED|Dimmable",
        adjectives="Adjustable|Minimalist|Wooden|Modern|Swing-Arm",
        features="with USB Port|with Touch Control|",
    ),
    _cat(
        "Light Bulbs",
        "Home",
        12,
        "light bulb",
        nouns="LED Bulb|Smart Bulb|Filament Bulb",
        variants="E27|E14|GU10",
        adjectives="Warm White|Dimmable|Energy-Saving|Color-Changing|Daylight",
        features="4-Pack|2-Pack|",
    ),
    _cat(
        "Pillows",
        "Home",
        35,
        "pillow",
        nouns="Pillow|Memory Foam Pillow|Down Pillow",
        variants="Standard|Queen|King",
        adjectives="Hypoallergenic|Cooling|Soft|Firm|Ergonomic",
        features="2-Pack|with Washable Cover|",
    ),
    _cat(
        "Duvets",
        "Home",
        90,
        "duvet",
        nouns="Duvet|Comforter|Quilt",
        variants="Single|Double|King",
        adjectives="All-Season|Lightweight|Warm|Down-Alternative|Organic Cotton",
        features="with Corner Tabs|13.5 Tog|",
    ),
    _cat(
        "Bed Sheets",
        "Home",
        50,
        "bed sheets",
        nouns="Sheet Set|Fitted Sheet|Duvet Cover Set",
        variants="Single|Double|King",
        adjectives="Egyptian Cotton|Linen|Percale|Sateen|Bamboo",
        features="400 Thread Count|with Deep Pockets|",
    ),
    _cat(
        "Running Shoes",
        "Sports & Fitness",
        110,
        "running shoes",
        nouns="Running Shoes|Trail Running Shoes|Racing Flats",
        variants="Men's|Women's",
        adjectives="Cushioned|Lightweight|Breathable|Stability|Responsive",
        features="with Carbon Plate|with Reflective Details|",
    ),
    _cat(
        "Yoga Mats",
        "Sports & Fitness",
        35,
        "yoga mat",
        nouns="Yoga Mat|Exercise Mat|Travel Yoga Mat",
        variants="4mm|6mm|8mm",
        adjectives="Non-Slip|Eco-Friendly|Extra-Thick|Cork|Foldable",
        features="with Carry Strap|with Alignment Lines|",
    ),
    _cat(
        "Dumbbells",
        "Sports & Fitness",
        80,
        "dumbbells",
        nouns="Adjustable Dumbbells|Dumbbell Set|Hex Dumbbells",
        variants="10kg|20kg|24kg",
        adjectives="Rubber-Coated|Compact|Chrome|Neoprene|Quick-Lock",
        features="with Stand|with Storage Tray|",
    ),
    _cat(
        "Water Bottles",
        "Sports & Fitness",
        22,
        "water bottle",
        nouns="Water Bottle|Insulated Bottle|Sports Bottle",
        variants="500ml|750ml|1L",
        adjectives="Insulated|Leakproof|BPA-Free|Stainless Steel|Collapsible",
        features="with Straw Lid|with Carry Loop|",
    ),
    _cat(
        "Fitness Trackers",
        "Sports & Fitness",
        90,
        "fitness tracker",
        nouns="Fitness Tracker|Smartwatch|Heart Rate Band",
        variants="GPS|Slim",
        adjectives="Waterproof|Lightweight|Long-Battery|Sleep-Tracking|Sport",
        features="with Heart Rate Monitor|with Sleep Tracking|",
    ),
)

DEPARTMENTS: tuple[str, ...] = tuple(BRANDS)

# What people tend to shop for next: the sequential structure a recommender should learn.
COMPLEMENTS: dict[str, tuple[str, ...]] = {
    "Tents": ("Sleeping Bags", "Headlamps"),
    "Sleeping Bags": ("Headlamps", "Backpacks"),
    "Backpacks": ("Hiking Boots", "Water Bottles"),
    "Hiking Boots": ("Backpacks", "Headlamps"),
    "Headlamps": ("Backpacks",),
    "Headphones": ("Chargers",),
    "Cameras": ("Memory Cards", "Tripods"),
    "Memory Cards": ("Tripods",),
    "Tripods": ("Chargers",),
    "Chargers": ("Headphones",),
    "Coffee Makers": ("Coffee Grinders",),
    "Coffee Grinders": ("Coffee Makers",),
    "Knives": ("Cookware",),
    "Cookware": ("Knives", "Blenders"),
    "Blenders": ("Cookware",),
    "Desk Lamps": ("Light Bulbs",),
    "Light Bulbs": ("Desk Lamps",),
    "Pillows": ("Bed Sheets",),
    "Duvets": ("Pillows", "Bed Sheets"),
    "Bed Sheets": ("Duvets",),
    "Running Shoes": ("Fitness Trackers", "Water Bottles"),
    "Yoga Mats": ("Water Bottles",),
    "Dumbbells": ("Yoga Mats",),
    "Water Bottles": ("Running Shoes",),
    "Fitness Trackers": ("Chargers", "Running Shoes"),
}

CATEGORY_INDEX = {cat.name: i for i, cat in enumerate(CATEGORIES)}
DEPARTMENT_OF = np.array([DEPARTMENTS.index(cat.department) for cat in CATEGORIES])

# Session behaviour.
P_STAY, P_COMPLEMENT = 0.25, 0.50  # otherwise the next session follows the user's affinity
P_SEARCH = 0.45
MEAN_EXTRA_VIEWS = 1.0  # items looked at per session = 1 + Poisson(this)
P_CLICK, P_CART, P_PURCHASE = 0.75, 0.25, 0.5
REPEAT_PENALTY = 0.15  # people rarely re-engage with an item they already engaged with
BRAND_BONUS = 8.0
MIN_ENGAGED = 6  # distinct engaged items every user ends up with
TARGET_EXTRA = 6.0  # mean distinct engaged items above MIN_ENGAGED


@dataclass(frozen=True)
class ShopConfig:
    n_items: int = 2400
    n_users: int = 6000
    seed: int = 0
    start: str = "2026-01-01"
    days: int = 180


def generate_shop(cfg: ShopConfig = ShopConfig()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (catalogue, events) in the schema of shared.schema, identical for identical configs."""
    if cfg.n_items < len(CATEGORIES):
        raise ValueError(f"n_items must be at least {len(CATEGORIES)} (one per category), got {cfg.n_items}")
    if cfg.n_users < 1 or cfg.days < 1:
        raise ValueError(f"n_users and days must be positive, got {cfg.n_users} and {cfg.days}")
    rng = np.random.default_rng(cfg.seed)
    items = _make_items(cfg.n_items, rng)
    rows: list[tuple[int, int, int, int, str]] = []  # (user, seconds from start, event, item, query)
    for user in range(cfg.n_users):
        rows.extend(_user_events(user, items, cfg.days, rng))

    catalogue = pd.DataFrame(
        {
            "item_id": [f"sku-{i:05d}" for i in range(cfg.n_items)],
            "title": items["title"],
            "brand": items["brand"],
            "category": [CATEGORIES[c].name for c in items["category"]],
            "price": items["price"],
            "description": items["description"],
        }
    )
    users, seconds, kinds, item_rows, queries = (list(column) for column in zip(*rows, strict=True))
    origin = np.datetime64(cfg.start, "s")  # a UTC date or date-time
    stamps = origin + np.array(seconds, dtype="timedelta64[s]")
    events = pd.DataFrame(
        {
            "user_id": [f"user-{u:05d}" for u in users],
            "item_id": catalogue["item_id"].to_numpy()[item_rows],
            "event": np.array(EVENT_TYPES)[kinds],
            "timestamp": np.datetime_as_string(stamps, unit="s", timezone="UTC"),
            "query": queries,
        }
    )
    for frame in (catalogue, events):
        for column in frame.columns:
            if column != "price":
                frame[column] = frame[column].astype(str)
    return catalogue, events


def write_shop(out_dir: str | Path, cfg: ShopConfig = ShopConfig()) -> tuple[Path, Path]:
    """Write out_dir/catalogue.csv and out_dir/events.csv."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    catalogue, events = generate_shop(cfg)
    catalogue_path, events_path = out_dir / "catalogue.csv", out_dir / "events.csv"
    catalogue.to_csv(catalogue_path, index=False, float_format="%.2f")
    events.to_csv(events_path, index=False)
    return catalogue_path, events_path


def _make_items(n_items: int, rng: np.random.Generator) -> dict:
    """Items grouped by category, with Zipf-like popularity inside each category."""
    brand_names = [name for dept in DEPARTMENTS for name, _ in BRANDS[dept]]
    brand_tier = np.array([TIERS.index(tier) for dept in DEPARTMENTS for _, tier in BRANDS[dept]])
    dept_brands = {
        dept: np.array([brand_names.index(name) for name, _ in BRANDS[dept]]) for dept in DEPARTMENTS
    }

    per_category = np.full(len(CATEGORIES), n_items // len(CATEGORIES))
    per_category[: n_items % len(CATEGORIES)] += 1
    category = np.repeat(np.arange(len(CATEGORIES)), per_category)
    items: dict = {key: [] for key in ("title", "brand", "description", "adjective", "variant")}
    brand_ids, prices, popularity = [], [], []
    for c, count in enumerate(per_category):
        cat = CATEGORIES[c]
        brands = rng.choice(dept_brands[cat.department], size=count)
        ranks = rng.permutation(count)
        popularity.extend(1.0 / (ranks + 1.0) ** 1.1)
        for b in brands:
            adjective = cat.adjectives[rng.integers(len(cat.adjectives))] if rng.random() < 0.85 else ""
            variant = cat.variants[rng.integers(len(cat.variants))] if rng.random() < 0.8 else ""
            noun = cat.nouns[rng.integers(len(cat.nouns))]
            feature = cat.features[rng.integers(len(cat.features))]
            title = " ".join(part for part in (brand_names[b], adjective, variant, noun, feature) if part)
            tier = int(brand_tier[b])
            price = round(cat.base_price * TIER_PRICE_FACTOR[tier] * float(rng.lognormal(0.0, 0.15)), 2)
            items["title"].append(title)
            items["brand"].append(brand_names[b])
            items["adjective"].append(adjective)
            items["variant"].append(variant)
            items["description"].append(_description(brand_names[b], adjective, variant, noun, feature, tier))
            brand_ids.append(int(b))
            prices.append(price)
    items.update(
        category=category,
        brand_id=np.array(brand_ids),
        tier=brand_tier[np.array(brand_ids)],
        price=np.array(prices),
        log_relative_price=np.log(np.array(prices) / np.array([CATEGORIES[c].base_price for c in category])),
        popularity=np.array(popularity),
        start=np.concatenate([[0], np.cumsum(per_category)[:-1]]),
        count=per_category,
        dept_brands=dept_brands,
        brand_tier=brand_tier,
    )
    return items


def _description(brand: str, adjective: str, variant: str, noun: str, feature: str, tier: int) -> str:
    what = " ".join(part for part in (adjective.lower(), variant, noun.lower()) if part)
    extra = f" {feature.lower()}" if feature else ""
    pitch = ("Good value for everyday use.", "A dependable all-rounder.", "Premium materials and build.")
    return f"{what[0].upper()}{what[1:]} from {brand}{extra}. {pitch[tier]}"


def _user_events(user: int, items: dict, days: int, rng: np.random.Generator) -> list[tuple]:
    """One user's timeline: sessions of search/view/click/cart/purchase until enough distinct engagement."""
    n_dept, n_cat = len(DEPARTMENTS), len(CATEGORIES)
    dept_weight = rng.dirichlet(np.full(n_dept, 0.5))
    within = rng.dirichlet(np.full(n_cat, 1.0))

    # Brand loyalty: 1-2 favourite brands per department, usually matching the user's price tier.
    tier = int(np.searchsorted(np.cumsum(TIER_SHARE), rng.random(), side="right"))
    favourite = np.zeros(len(items["brand_tier"]), dtype=bool)
    for dept in DEPARTMENTS:
        brands = items["dept_brands"][dept]
        fit = np.where(items["brand_tier"][brands] == tier, 4.0, 1.0)
        favourite[brands[_weighted_sample(fit, int(rng.integers(1, 3)), rng)]] = True
    log_target = np.log(TIER_PRICE_FACTOR[tier]) + rng.normal(0.0, 0.1)
    price_fit = np.exp(-((items["log_relative_price"] - log_target) ** 2) / (2 * 0.3**2))
    loyalty = np.where(favourite[items["brand_id"]], BRAND_BONUS, 1.0)
    weight = items["popularity"] * price_fit * loyalty

    target = MIN_ENGAGED + int(rng.poisson(rng.gamma(2.0, TARGET_EXTRA / 2.0)))
    drift_at: int | None = int(rng.integers(target // 3, 2 * target // 3 + 1))
    engaged: set[int] = set()
    sessions: list[list[tuple[int, int, str]]] = []
    category = -1
    while len(engaged) < target:
        if drift_at is not None and len(engaged) >= drift_at:
            main = int(np.argmax(dept_weight))
            new = int(rng.choice([d for d in range(n_dept) if d != main]))
            dept_weight = 0.3 * dept_weight + 0.7 * np.eye(n_dept)[new]
            drift_at = None
        category = _next_category(category, dept_weight[DEPARTMENT_OF] * within, rng)
        session = _session(category, items, weight, rng)
        sessions.append(session)
        for kind, item, _ in session:
            if kind != VIEW and item not in engaged:
                engaged.add(item)
                weight[item] *= REPEAT_PENALTY
    return _timeline(user, sessions, days, rng)


def _next_category(previous: int, affinity: np.ndarray, rng: np.random.Generator) -> int:
    roll = rng.random()
    if previous >= 0 and roll < P_STAY:
        return previous
    if previous >= 0 and roll < P_STAY + P_COMPLEMENT:
        options = COMPLEMENTS[CATEGORIES[previous].name]
        return CATEGORY_INDEX[options[int(rng.integers(len(options)))]]
    cumulative = np.cumsum(affinity)
    return int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))


def _session(category: int, items: dict, weight: np.ndarray, rng: np.random.Generator) -> list[tuple]:
    """Events of one single-category session, following the view > click > cart > purchase funnel."""
    start, count = int(items["start"][category]), int(items["count"][category])
    n_picked = min(count, 1 + int(rng.poisson(MEAN_EXTRA_VIEWS)))
    picked = [start + int(i) for i in _weighted_sample(weight[start : start + count], n_picked, rng)]

    events: list[tuple[int, int, str]] = []
    clicked = []
    if rng.random() < P_SEARCH:
        item = picked.pop(0)
        events.append((SEARCH, item, _query(item, category, items, rng)))
        clicked.append(item)
    for item in picked:
        events.append((VIEW, item, ""))
        if rng.random() < P_CLICK:
            events.append((CLICK, item, ""))
            clicked.append(item)
    carted = [item for item in clicked if rng.random() < P_CART]
    events.extend((CART, item, "") for item in carted)
    events.extend((PURCHASE, item, "") for item in carted if rng.random() < P_PURCHASE)
    return events


def _weighted_sample(weight: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct positions drawn in proportion to weight (Efraimidis-Spirakis: smallest Exp(1)/w win)."""
    keys = rng.exponential(size=len(weight)) / weight
    return np.argsort(keys, kind="stable")[:k]


def _query(item: int, category: int, items: dict, rng: np.random.Generator) -> str:
    """What a person types to find this item: a noun with a brand, adjective, size or price word."""
    noun = CATEGORIES[category].query_noun
    choices = [noun, f"{items['brand'][item].lower()} {noun}"]
    if items["adjective"][item]:
        choices.append(f"{items['adjective'][item].lower()} {noun}")
    if items["variant"][item]:
        choices.append(f"{noun} {items['variant'][item].lower()}")
    tier = int(items["tier"][item])
    if tier != 1:
        choices.append(f"{('cheap', '', 'best')[tier]} {noun}")
    return choices[int(rng.integers(len(choices)))]


def _timeline(user: int, sessions: list, days: int, rng: np.random.Generator) -> list[tuple]:
    """Spread sessions over the period; events inside a session are seconds to minutes apart."""
    horizon = days * 86400
    first = int(rng.integers(0, horizon // 3))
    starts = np.sort(rng.integers(first, horizon, size=len(sessions)))
    rows = []
    clock = -1
    for session, begin in zip(sessions, starts, strict=True):
        clock = max(int(begin), clock + 1800)
        for kind, item, query in session:
            clock += int(rng.integers(5, 180))
            rows.append((user, clock, kind, item, query))
    return rows
