"""advance(): statuses only rise in RANK, for one row or many, in one statement per status."""

from __future__ import annotations

from sqlalchemy import update

from core.models import LedgerEntry
from tests.test_tracking_support import seed, status_of
from tracking.status import advance


def test_advance_is_forward_only_and_set_based(engine):
    world = seed(engine, n=5, control=(4,))
    a, b, c, d, held = world.ledger_ids
    t = LedgerEntry.__table__
    with engine.begin() as conn:
        conn.execute(update(t).where(t.c.id == b).values(status="clicked"))
        conn.execute(update(t).where(t.c.id == c).values(status="bounced"))
        conn.execute(update(t).where(t.c.id == d).values(status="planned"))
        changed = advance(conn, [a, b, c, d, held], "opened")
    assert changed == 3  # a (sent), c (bounced, rank 5 < 6), d (planned)
    assert [status_of(engine, x) for x in (a, b, c, d, held)] == [
        "opened",
        "clicked",
        "opened",
        "opened",
        "held_out",
    ]
    with engine.begin() as conn:
        assert advance(conn, a, "delivered") == 0  # late 'delivered' after 'opened'
        assert advance(conn, a, "bounced", reason="hard") == 0  # same rank as delivered, below opened
        assert advance(conn, [], "converted") == 0
        assert advance(conn, held, "converted") == 0  # the control group never moves
        assert advance(conn, iter([a, a]), "converted", reason=None) == 1
    assert status_of(engine, a) == "converted"
