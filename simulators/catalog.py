"""The seller's product catalog, generated deterministically from a seed.

Why it is a public, stable function: the OMS demo loads ITS product table from ``generate_catalog(seed, n)``
and the simulators sell from the same list, so SKUs, barcodes and marketplace ids line up on both sides
without any mapping file. Stability rules (do not break them without bumping ``CATALOG_VERSION``):

* only the standard library's ``random.Random`` seeded with a string is used (stable across Python versions
  and processes — no Faker, no ``hash()``);
* ``generate_catalog(seed, n)`` is a prefix of ``generate_catalog(seed, n + k)``: growing the catalog never
  changes existing products.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from decimal import Decimal

CATALOG_VERSION = 1

# (prefix, category, weight in the catalog, product types)
# product type: (name, (min price, max price) RUB, (min g, max g), (length, width, height) cm, variants, has_model)
_CATEGORIES: tuple[tuple[str, str, int, tuple], ...] = (
    ("ELC", "Электроника", 18, (
        ("Наушники беспроводные", (1490, 12990), (40, 250), (18, 12, 6), ("чёрные", "белые", "синие"), True),
        ("Внешний аккумулятор 10000 мА·ч", (990, 3490), (180, 260), (15, 8, 3), ("чёрный", "белый"), True),
        ("Умная колонка", (2990, 15990), (300, 1200), (15, 15, 20), ("графит", "песочная"), True),
        ("Кабель USB-C 1 м", (290, 990), (30, 60), (12, 8, 2), ("чёрный", "белый", "плетёный"), True),
        ("Фитнес-браслет", (1990, 6990), (30, 80), (14, 9, 5), ("чёрный", "розовый", "мятный"), True),
        ("Клавиатура беспроводная", (1290, 5990), (400, 900), (45, 15, 4), ("чёрная", "белая"), True),
    )),
    ("HOM", "Дом и кухня", 20, (
        ("Кружка керамическая 350 мл", (290, 990), (300, 450), (12, 10, 11), ("белая", "синяя", "с принтом"), False),
        ("Полотенце махровое 70×140 см", (590, 1990), (400, 600), (30, 25, 8), ("белое", "бежевое", "серое"), False),
        ("Комплект постельного белья 1,5-спальный", (1990, 6990), (1200, 1900), (35, 28, 8),
         ("сатин", "бязь", "перкаль"), False),
        ("Сковорода антипригарная 26 см", (1290, 4990), (900, 1600), (48, 28, 8), ("для индукции", "для газа"), True),
        ("Контейнер для хранения 1,2 л", (190, 590), (120, 250), (20, 15, 10), ("прозрачный", "серый"), False),
        ("Плед флисовый 150×200 см", (890, 2990), (700, 1100), (35, 30, 10), ("серый", "бордовый", "горчичный"), False),
    )),
    ("KID", "Детские товары", 12, (
        ("Конструктор", (990, 5990), (300, 1500), (30, 25, 8), ("120 деталей", "350 деталей", "600 деталей"), True),
        ("Мягкая игрушка Медведь 30 см", (590, 1990), (200, 400), (30, 20, 15), ("бежевый", "белый"), False),
        ("Пазл 1000 элементов", (490, 1290), (500, 800), (30, 25, 6), ("пейзаж", "город", "животные"), False),
        ("Набор для рисования", (690, 2990), (500, 1500), (35, 25, 5), ("48 предметов", "120 предметов"), False),
    )),
    ("BTY", "Красота и здоровье", 14, (
        ("Крем для рук 75 мл", (190, 690), (90, 120), (14, 5, 4), ("увлажняющий", "питательный"), False),
        ("Шампунь 400 мл", (290, 990), (450, 520), (22, 8, 6), ("для всех типов волос", "для окрашенных волос"), False),
        ("Патчи для глаз гидрогелевые, 60 шт", (490, 1490), (100, 150), (10, 10, 5), ("с коллагеном", "с алоэ"), False),
        ("Зубная щётка электрическая", (1490, 6990), (150, 350), (25, 8, 5), ("белая", "чёрная"), True),
    )),
    ("SPT", "Спорт и отдых", 10, (
        ("Коврик для йоги 183×61 см", (990, 3490), (800, 1500), (63, 12, 12), ("фиолетовый", "серый", "зелёный"), False),
        ("Гантели виниловые 2×2 кг", (990, 1990), (4000, 4200), (25, 20, 10), ("розовые", "синие"), False),
        ("Бутылка для воды 750 мл", (390, 1490), (120, 250), (25, 8, 8), ("прозрачная", "чёрная"), False),
        ("Скакалка скоростная", (290, 990), (100, 200), (20, 10, 5), ("чёрная", "красная"), False),
    )),
    ("CLO", "Одежда", 14, (
        ("Футболка хлопковая", (590, 1990), (150, 250), (30, 25, 3), ("S", "M", "L", "XL"), False),
        ("Худи унисекс", (1990, 4990), (500, 800), (35, 30, 8), ("S", "M", "L", "XL"), False),
        ("Носки хлопковые, 5 пар", (390, 990), (150, 250), (20, 15, 4), ("36–38", "39–41", "42–44"), False),
        ("Шапка вязаная", (590, 1490), (100, 150), (25, 20, 5), ("серая", "чёрная", "бордовая"), False),
    )),
    ("PET", "Зоотовары", 6, (
        ("Корм сухой для кошек 1,5 кг", (690, 1990), (1500, 1600), (30, 20, 8), ("курица", "индейка", "лосось"), False),
        ("Лежанка для собак 60×45 см", (1290, 3490), (800, 1200), (60, 45, 15), ("серая", "коричневая"), False),
        ("Когтеточка-столбик", (590, 1990), (1200, 2500), (35, 35, 50), ("бежевая", "серая"), False),
    )),
    ("FOD", "Продукты", 6, (
        ("Чай чёрный листовой 250 г", (290, 890), (270, 300), (15, 8, 8), ("цейлонский", "ассам"), False),
        ("Кофе в зёрнах 1 кг", (990, 2490), (1000, 1050), (28, 14, 8), ("арабика", "бленд"), False),
        ("Мёд натуральный 500 г", (390, 990), (650, 750), (10, 10, 12), ("цветочный", "гречишный"), False),
    )),
)  # fmt: skip

_BRANDS = ("Вектор", "Северный", "Домовита", "Лайтекс", "Кедр", "Умка", "Арктика", "Неон", "Пульс", "Маяк",
           "Сфера", "Ладога", "Берёзка", "Орбита", "Тайга")  # fmt: skip
_MODEL_LETTERS = "ABCDEFHKMPRSTX"


@dataclass(frozen=True, slots=True)
class Product:
    """One sellable SKU with the ids each external system knows it by."""

    sku: str  # the seller's article; also the Ozon offer_id, the WB "article" and the Shopify variant SKU
    offer_id: str
    name: str
    category: str
    brand: str
    barcode: str  # EAN-13 with a valid check digit
    weight_g: int
    length_cm: int
    width_cm: int
    height_cm: int
    price: Decimal  # list price, RUB
    ozon_product_id: int
    ozon_sku: int
    wb_nm_id: int
    wb_chrt_id: int
    shopify_product_id: int
    shopify_variant_id: int
    shopify_inventory_item_id: int

    @property
    def dimensions(self) -> tuple[int, int, int]:
        """(length, width, height) in cm."""
        return (self.length_cm, self.width_cm, self.height_cm)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["price"] = f"{self.price:.2f}"
        return d


def ean13_check_digit(first12: str) -> str:
    """Check digit of an EAN-13: weights 1,3,1,3… from the left over the first 12 digits."""
    if len(first12) != 12 or not first12.isdigit():
        raise ValueError("need exactly 12 digits")
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return str((10 - total % 10) % 10)


def is_valid_ean13(code: str) -> bool:
    return len(code) == 13 and code.isdigit() and ean13_check_digit(code[:12]) == code[12]


def _price(rng: random.Random, lo: int, hi: int) -> Decimal:
    raw = rng.uniform(lo, hi)
    rounded = max(round(raw / 100) * 100 - 10, 190)  # psychological prices: 1290, 990, …
    return Decimal(rounded).quantize(Decimal("0.01"))


def _product(seed: int, i: int) -> tuple[str, Product]:
    """The i-th product: its own RNG so a product never depends on how many came before it."""
    rng = random.Random(f"oms-catalog:v{CATALOG_VERSION}:{seed}:{i}")
    prefix, category, _w, types = rng.choices(_CATEGORIES, weights=[c[2] for c in _CATEGORIES])[0]
    name, (plo, phi), (wlo, whi), (ln, wd, ht), variants, has_model = rng.choice(types)
    brand = rng.choice(_BRANDS)
    variant = rng.choice(variants)
    if has_model:
        model = (
            f"{rng.choice(_MODEL_LETTERS)}{rng.randint(1, 9)}{rng.choice(('', '0', '00', ' Pro', ' Lite'))}"
        )
        full = f"{name} {brand} {model}, {variant}"
    else:
        full = f"{name} {brand}, {variant}"

    def jitter(v: int) -> int:
        return max(1, round(v * rng.uniform(0.9, 1.1)))

    sku = f"{prefix}-{10001 + i}"
    item_ref = (seed * 7919 + i) % 10**8
    body = f"4607{item_ref:08d}"
    product = Product(
        sku=sku,
        offer_id=sku,
        name=full,
        category=category,
        brand=brand,
        barcode=body + ean13_check_digit(body),
        weight_g=rng.randint(wlo, whi),
        length_cm=jitter(ln),
        width_cm=jitter(wd),
        height_cm=jitter(ht),
        price=_price(rng, plo, phi),
        # ids grow with i (as they do in real accounts) and stay unique: each i owns its own block
        ozon_product_id=310_000_000 + i * 97 + rng.randint(0, 96),
        ozon_sku=1_500_000_000 + i * 1009 + rng.randint(0, 1008),
        wb_nm_id=150_000_000 + i * 31 + rng.randint(0, 30),
        wb_chrt_id=250_000_000 + i * 53 + rng.randint(0, 52),
        shopify_product_id=8_100_000_000_000 + i * 1000 + rng.randint(0, 999),
        shopify_variant_id=45_000_000_000_000 + i * 1000 + rng.randint(0, 999),
        shopify_inventory_item_id=47_000_000_000_000 + i * 1000 + rng.randint(0, 999),
    )
    return full, product


def generate_catalog(seed: int = 42, n_skus: int = 200) -> list[Product]:
    """Return ``n_skus`` products, deterministic for ``seed`` (see the module docstring for the guarantees).

    Names are Russian, unique within the catalog (a duplicate gets its article appended).
    """
    if n_skus < 1:
        raise ValueError("n_skus must be >= 1")
    seen: set[str] = set()
    out: list[Product] = []
    for i in range(n_skus):
        name, product = _product(seed, i)
        if name in seen:
            product = _replace_name(product, f"{name} (арт. {product.sku})")
        seen.add(product.name)
        out.append(product)
    return out


def _replace_name(p: Product, name: str) -> Product:
    d = asdict(p)
    d["name"] = name
    return Product(**d)


def catalog_index(catalog: list[Product]) -> dict[str, Product]:
    """SKU → product."""
    return {p.sku: p for p in catalog}


def product_record(p: Product) -> dict:
    """One product as JSON (the manifest's catalog export): every field, the price as a decimal string."""
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in asdict(p).items()}
