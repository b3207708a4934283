"""A DictDB scenario as data, so it can run in one process or be split over two.

Each step is ``(table or None, method, args, kwargs)``; ``run_step`` runs it
against a database handle and returns ``("ok", value)`` or
``("error", exception class name)``.  Conditions are built from ``Field`` so
they pickle to the other process.
"""

from __future__ import annotations

from typing import Any

from dictdb_shm import Avg, Count, Max, Min, Not, Or, Sum
from dictdb_shm.query import Field

age, name, city, score, tags = (Field(f) for f in ("age", "name", "city", "score", "tags"))
sku, stock, cnt = Field("sku"), Field("stock"), Field("count")


def people(start: int, n: int) -> list[dict]:
    cities = ["Paris", "Oslo", "Rome", None]
    out = []
    for i in range(start, start + n):
        r: dict[str, Any] = {"name": f"user{i:03d}", "age": 15 + (i * 7) % 60,
                             "score": round((i * 37 % 100) / 10, 1)}
        if cities[i % 4] is not None:
            r["city"] = cities[i % 4]
        if i % 5 == 0:
            r["tags"] = ["vip", f"t{i % 3}"]
        out.append(r)
    return out


STEPS: list[tuple] = [
    (None, "create_table", ("people",), {}),
    (None, "create_table", ("stock",), {"primary_key": "sku",
                                        "schema": {"sku": str, "stock": int, "count": int}}),
    ("people", "insert", (people(0, 120),), {}),
    ("people", "insert", ({"name": "solo", "age": 99},), {}),
    ("people", "select", (), {"where": age >= 60, "order_by": ["-age", "name"]}),
    ("people", "select", (), {"columns": {"who": "name", "years": "age"},
                              "where": (city == "Oslo") & (age < 30), "order_by": "name"}),
    ("people", "select", (), {"columns": ["city"], "distinct": True, "order_by": "city"}),
    ("people", "select", (), {"where": name.like("user1_5"), "order_by": "name"}),
    ("people", "select", (), {"where": Or(city.is_null(), name.istartswith("USER00")),
                              "order_by": "name", "limit": 7, "offset": 2}),
    ("people", "select", (), {"where": Not(tags.contains("vip")) & score.between(2, 3),
                              "order_by": "name"}),
    ("people", "create_index", ("age",), {"index_type": "sorted"}),
    ("people", "create_index", ("city",), {}),
    ("people", "select", (), {"where": age.between(40, 45) & (city == "Rome"),
                              "order_by": "name"}),
    ("people", "select", (), {"where": city.is_in(["Paris", "Nowhere"]), "order_by": "name",
                              "limit": 5}),
    ("people", "update", ({"score": 0.0},), {"where": (age > 70) & (city == "Paris")}),
    ("people", "update", ({"age": 1},), {"where": name == "nobody"}),
    ("people", "delete", (), {"where": age < 20}),
    ("people", "upsert", ({"id": 3, "age": 33},), {}),
    ("people", "upsert", ({"id": 4, "age": 44},), {"on_conflict": "ignore"}),
    ("people", "upsert", ({"id": 5},), {"on_conflict": "error"}),
    ("people", "insert", ({"id": 3, "name": "dup"},), {}),
    ("people", "aggregate", (), {"group_by": "city", "n": Count(), "avg": Avg("score"),
                                 "oldest": Max("age")}),
    ("people", "aggregate", (), {"where": age >= 50, "total": Sum("score"),
                                 "youngest": Min("age"), "with_city": Count("city")}),
    ("people", "count", (), {}),
    ("people", "get", (3,), {}),
    ("people", "columns", (), {}),
    ("people", "indexed_fields", (), {}),
    ("stock", "insert", ([{"sku": "a1", "stock": 5, "count": 1},
                          {"sku": "b2", "stock": 0, "count": 2}],), {}),
    ("stock", "insert", ({"sku": "c3", "stock": "many", "count": 3},), {}),
    ("stock", "select", (), {"where": cnt > 1}),
    ("stock", "update", ({"stock": -1},), {"where": sku.startswith("a")}),
    ("stock", "schema_fields", (), {}),
    ("stock", "all", (), {}),
    (None, "list_tables", (), {}),
    (None, "drop_table", ("stock",), {}),
    (None, "get_table", ("stock",), {}),
    ("people", "copy", (), {}),
]


def run_step(db: Any, step: tuple) -> tuple[str, Any]:
    table, method, args, kwargs = step
    target = db if table is None else db.get_table(table)
    try:
        value = getattr(target, method)(*args, **kwargs)
    except Exception as exc:
        return ("error", type(exc).__name__)
    if method in ("create_table", "get_table"):
        value = None                         # a handle, not a result
    if method == "list_tables":
        value = sorted(value)
    return ("ok", value)
