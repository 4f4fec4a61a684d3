"""Next best offer: item-to-item co-purchase recommendations, written to `recommendation`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select
from typer.testing import CliRunner

from audiences.learning.recommend import recommend, recommendations_for
from core.models import Customer, Order, Recommendation

T = datetime(2026, 2, 1, tzinfo=UTC)


def _base(conn, baskets: dict[str, list[tuple[str | None, str]]]) -> dict[str, int]:
    ids = {}
    for ext, items in baskets.items():
        cid = conn.execute(
            insert(Customer.__table__)
            .values(external_id=ext, created_at=T, updated_at=T)
            .returning(Customer.__table__.c.id)
        ).scalar_one()
        ids[ext] = cid
        for i, (product, category) in enumerate(items):
            conn.execute(
                insert(Order.__table__).values(
                    external_id=f"{ext}-{i}", customer_id=cid, ordered_at=T - timedelta(days=i + 1),
                    amount_cents=1000, product=product, category=category,
                )
            )  # fmt: skip
    return ids


def test_co_purchases_recommend_what_similar_baskets_hold_and_never_what_was_bought(engine) -> None:
    baskets = {
        "a": [("boots", "shoes"), ("socks", "shoes"), ("polish", "care")],
        "b": [("boots", "shoes"), ("socks", "shoes")],
        "c": [("boots", "shoes"), ("socks", "shoes"), ("polish", "care")],
        "d": [("boots", "shoes")],  # bought with socks 3 times, with polish twice: socks scores higher
        "e": [("scarf", "accessories"), ("hat", "accessories")],
        "f": [("scarf", "accessories"), ("hat", "accessories")],
        "g": [("hat", "accessories"), (None, "beauty")],  # no product: the category is the item
        "h": [("scarf", "accessories"), (None, "beauty")],
        "i": [("scarf", "accessories")],
        "n": [],  # no order: no recommendation
    }
    with engine.begin() as conn:
        ids = _base(conn, baskets)
    res = recommend(engine, k=3, version="v1")
    assert res.items == 6 and res.customers == 9
    with engine.connect() as conn:
        recs = recommendations_for(conn, ids.values())
    by_ext = {ext: [r["item"] for r in recs[cid]] for ext, cid in ids.items()}
    assert by_ext["d"][:2] == ["socks", "polish"]
    assert by_ext["b"][0] == "polish"
    assert by_ext["i"][:2] == ["hat", "boots"]  # scarf+beauty once only (< min_support): popularity fills
    assert by_ext["n"] == []
    for ext, items in baskets.items():
        assert not {p or c for p, c in items} & set(by_ext[ext]), ext
    assert [r["rank"] for r in recs[ids["d"]]] == [1, 2, 3]
    scores = [r["score"] for r in recs[ids["d"]]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    # rerun replaces (same rows, new version), never duplicates
    recommend(engine, k=3, version="v2")
    with engine.connect() as conn:
        rows = conn.execute(select(Recommendation.__table__)).all()
    assert len(rows) == res.rows and {r.model_version for r in rows} == {"v2"}


def test_recommend_command(sqlite_engine) -> None:
    from relance.cli import app

    with sqlite_engine.begin() as conn:
        _base(conn, {"a": [("x", "c1"), ("y", "c1")], "b": [("x", "c1"), ("y", "c1")], "c": [("x", "c1")]})
    result = CliRunner().invoke(app, ["recommend", "--per-customer", "2"])
    assert result.exit_code == 0, result.output
    assert "for 3 customers (2 items)" in result.output
    with sqlite_engine.connect() as conn:
        assert recommendations_for(conn, [3])[3][0]["item"] == "y"
