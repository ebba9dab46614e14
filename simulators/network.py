"""The seller's fulfilment network as the outside systems know it: warehouses and stores with their ids.

Why one table: each external system names the same physical place differently (an Ozon ``warehouse_id``, a
WB ``warehouseId``, a Shopify ``location_id``, a CDEK shipment point, a WMS code). The simulators all read
this table so that a stock push for Ozon warehouse 22142605386000 and a WMS snapshot for ``MSK1`` are about
the same shelf. The runner writes it into ``simulators.json`` so the OMS can seed its location mapping.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from simulators.geo import CITY_BY_NAME, City, haversine_km

LocationKind = Literal["warehouse", "store"]


@dataclass(frozen=True, slots=True)
class Location:
    code: str  # our code, also the WMS warehouse code and the POS store code
    kind: LocationKind
    name: str
    city: str
    address: str
    lat: float
    lon: float
    ozon_warehouse_id: int | None  # FBS warehouses registered in Ozon
    wb_warehouse_id: int | None  # seller warehouses registered in Wildberries
    shopify_location_id: int | None  # web store locations (stores too: click & collect)
    cdek_shipment_point: str | None  # CDEK office where the warehouse hands parcels over

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def city_info(self) -> City:
        return CITY_BY_NAME[self.city]


LOCATIONS: tuple[Location, ...] = (
    Location(
        "MSK1", "warehouse", "Склад Подольск", "Подольск", "Московская обл., г. Подольск, ул. Поливановская, д. 9",
        55.4420, 37.5530, 22142605386000, 1207430, 71000001001, "PDL12",
    ),
    Location(
        "SPB1", "warehouse", "Склад Шушары", "Санкт-Петербург", "г. Санкт-Петербург, пос. Шушары, Московское ш., д. 231",
        59.7993, 30.3890, 22142605386001, 1207431, 71000001002, "SPB31",
    ),
    Location(
        "EKB1", "warehouse", "Склад Екатеринбург", "Екатеринбург", "г. Екатеринбург, ул. Альпинистов, д. 57",
        56.7856, 60.5690, 22142605386002, 1207432, 71000001003, "EKB44",
    ),
    Location(
        "MSK-S01", "store", "Магазин Тверская", "Москва", "г. Москва, ул. Тверская, д. 15",
        55.7634, 37.6063, None, None, 71000002001, None,
    ),
    Location(
        "MSK-S02", "store", "Магазин Авиапарк", "Москва", "г. Москва, Ходынский б-р, д. 4",
        55.7905, 37.5314, None, None, 71000002002, None,
    ),
    Location(
        "SPB-S01", "store", "Магазин Невский", "Санкт-Петербург", "г. Санкт-Петербург, Невский пр., д. 54",
        59.9341, 30.3411, None, None, 71000002003, None,
    ),
    Location(
        "KZN-S01", "store", "Магазин Баумана", "Казань", "г. Казань, ул. Баумана, д. 44",
        55.7902, 49.1148, None, None, 71000002004, None,
    ),
)  # fmt: skip

LOCATION_BY_CODE: dict[str, Location] = {loc.code: loc for loc in LOCATIONS}
WAREHOUSES: tuple[Location, ...] = tuple(loc for loc in LOCATIONS if loc.kind == "warehouse")
STORES: tuple[Location, ...] = tuple(loc for loc in LOCATIONS if loc.kind == "store")
BY_OZON_WAREHOUSE: dict[int, Location] = {w.ozon_warehouse_id: w for w in WAREHOUSES if w.ozon_warehouse_id}
BY_WB_WAREHOUSE: dict[int, Location] = {w.wb_warehouse_id: w for w in WAREHOUSES if w.wb_warehouse_id}
BY_SHOPIFY_LOCATION: dict[int, Location] = {
    loc.shopify_location_id: loc for loc in LOCATIONS if loc.shopify_location_id
}


def nearest_warehouse(city: City) -> Location:
    """The warehouse a marketplace would ship a posting from: the closest one to the customer."""
    return min(WAREHOUSES, key=lambda w: haversine_km(w.lat, w.lon, city.lat, city.lon))


def warehouses_near(code: str) -> tuple[Location, ...]:
    """Warehouses by distance from warehouse ``code`` (itself first): the order a marketplace falls back in
    when the nearest warehouse has not published enough stock for a posting."""
    here = LOCATION_BY_CODE[code]
    return tuple(sorted(WAREHOUSES, key=lambda w: (haversine_km(w.lat, w.lon, here.lat, here.lon), w.code)))


def stores_in(city_name: str) -> tuple[Location, ...]:
    return tuple(s for s in STORES if s.city == city_name)


def describe_network() -> dict:
    """JSON-ready view written into ``simulators.json``."""
    return {"locations": [loc.to_dict() for loc in LOCATIONS]}
