"""Russian cities the order generator draws customers from, weighted by population.

Why a hand-written table instead of Faker's random cities: the OMS routes orders by region and distance, the
carrier simulator needs CDEK city codes, and KPI dashboards group by region. That needs real places with real
coordinates, time zones and a realistic population skew (Moscow and its oblast dominate online retail).

``weight`` is the share of the orders (thousands of inhabitants of the area the city stands for, rounded).
CDEK city codes for Moscow (44), St Petersburg (137), Novosibirsk (270), Yekaterinburg (250), Kazan (424) and
Krasnodar (435) are the real ones; the others are given for the simulator's own consistency and should be
looked up with ``/v2/location/cities`` against the real API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class City:
    name: str
    region: str
    region_code: str  # ISO 3166-2:RU
    lat: float
    lon: float
    weight: int  # thousands of people the city stands for in the order mix
    utc_offset: int  # hours
    postcode_prefix: str  # first three digits of local postcodes
    cdek_code: int
    hub: str  # three-letter code used in pickup-point codes (CDEK style "MSK123")


CITIES: tuple[City, ...] = (
    City("Москва", "Москва", "RU-MOW", 55.7558, 37.6173, 13100, 3, "101", 44, "MSK"),
    City("Балашиха", "Московская область", "RU-MOS", 55.7964, 37.9382, 1700, 3, "143", 1004, "BLS"),
    City("Химки", "Московская область", "RU-MOS", 55.8970, 37.4297, 1500, 3, "141", 1005, "HMK"),
    City("Подольск", "Московская область", "RU-MOS", 55.4311, 37.5445, 1500, 3, "142", 1006, "PDL"),
    City("Мытищи", "Московская область", "RU-MOS", 55.9116, 37.7308, 1400, 3, "141", 1007, "MYT"),
    City("Люберцы", "Московская область", "RU-MOS", 55.6766, 37.8981, 1300, 3, "140", 1008, "LBR"),
    City("Королёв", "Московская область", "RU-MOS", 55.9162, 37.8545, 1200, 3, "141", 1009, "KRL"),
    City("Санкт-Петербург", "Санкт-Петербург", "RU-SPE", 59.9343, 30.3351, 5600, 3, "190", 137, "SPB"),
    City("Всеволожск", "Ленинградская область", "RU-LEN", 60.0204, 30.6372, 1100, 3, "188", 1010, "VSV"),
    City("Гатчина", "Ленинградская область", "RU-LEN", 59.5764, 30.1283, 900, 3, "188", 1011, "GTC"),
    City("Краснодар", "Краснодарский край", "RU-KDA", 45.0355, 38.9753, 2600, 3, "350", 435, "KRD"),
    City("Сочи", "Краснодарский край", "RU-KDA", 43.5855, 39.7231, 1500, 3, "354", 1012, "SOC"),
    City("Новороссийск", "Краснодарский край", "RU-KDA", 44.7235, 37.7687, 900, 3, "353", 1013, "NVR"),
    City("Екатеринбург", "Свердловская область", "RU-SVE", 56.8389, 60.6057, 2700, 5, "620", 250, "EKB"),
    City("Нижний Тагил", "Свердловская область", "RU-SVE", 57.9194, 59.9650, 900, 5, "622", 1014, "NTG"),
    City("Казань", "Республика Татарстан", "RU-TA", 55.7961, 49.1064, 2300, 3, "420", 424, "KZN"),
    City("Набережные Челны", "Республика Татарстан", "RU-TA", 55.7436, 52.3958, 1200, 3, "423", 1015, "NCH"),
    City("Новосибирск", "Новосибирская область", "RU-NVS", 55.0084, 82.9357, 2200, 7, "630", 270, "NSK"),
    City("Нижний Новгород", "Нижегородская область", "RU-NIZ", 56.2965, 43.9361, 2300, 3, "603", 414, "NNV"),
    City("Самара", "Самарская область", "RU-SAM", 53.1959, 50.1002, 1700, 4, "443", 430, "SMR"),
    City("Тольятти", "Самарская область", "RU-SAM", 53.5078, 49.4204, 1000, 4, "445", 1016, "TLT"),
    City("Ростов-на-Дону", "Ростовская область", "RU-ROS", 47.2357, 39.7015, 2400, 3, "344", 438, "RND"),
    City("Уфа", "Республика Башкортостан", "RU-BA", 54.7388, 55.9721, 2300, 5, "450", 256, "UFA"),
    City("Челябинск", "Челябинская область", "RU-CHE", 55.1644, 61.4368, 2200, 5, "454", 259, "CHL"),
    City("Красноярск", "Красноярский край", "RU-KYA", 56.0153, 92.8932, 1700, 7, "660", 278, "KJA"),
    City("Пермь", "Пермский край", "RU-PER", 58.0105, 56.2502, 1600, 5, "614", 248, "PRM"),
    City("Воронеж", "Воронежская область", "RU-VOR", 51.6720, 39.1843, 1500, 3, "394", 506, "VRN"),
    City("Волгоград", "Волгоградская область", "RU-VGG", 48.7080, 44.5133, 1500, 3, "400", 426, "VOG"),
    City("Омск", "Омская область", "RU-OMS", 54.9885, 73.3242, 1300, 6, "644", 268, "OMS"),
    City("Тюмень", "Тюменская область", "RU-TYU", 57.1530, 65.5343, 1000, 5, "625", 1017, "TJM"),
    City("Иркутск", "Иркутская область", "RU-IRK", 52.2870, 104.3050, 1200, 8, "664", 1018, "IKT"),
    City("Владивосток", "Приморский край", "RU-PRI", 43.1155, 131.8855, 1000, 10, "690", 1019, "VVO"),
    City("Хабаровск", "Хабаровский край", "RU-KHA", 48.4802, 135.0719, 800, 10, "680", 1020, "KHV"),
)

CITY_BY_NAME: dict[str, City] = {c.name: c for c in CITIES}
CITY_BY_CDEK_CODE: dict[int, City] = {c.cdek_code: c for c in CITIES}
CITY_BY_HUB: dict[str, City] = {c.hub: c for c in CITIES}


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km — good enough for routing scores and carrier transit times."""
    r = 6371.0
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


def find_city(text: str | None) -> City | None:
    """Find a known city mentioned in a free-text address (used by the carrier simulator)."""
    if not text:
        return None
    lowered = text.lower()
    # longest names first so "Нижний Новгород" wins over a shorter accidental match
    for city in sorted(CITIES, key=lambda c: -len(c.name)):
        if city.name.lower() in lowered:
            return city
    return None
