"""Selection: the six reach flags move from ``customer_reach`` into the customer's own row.

Why: the plan's segment reads ``customer`` anyway (erased_at, time zone, preferred
channel); the flags in a second table meant a second join for every member. On
PostgreSQL 15 that join was a LEFT JOIN, whose nullable side must be the hashed
one (15 has no parallel hash right join): every process of the parallel segment
helped build a hash of the whole table (1M rows, ~0.26 s of a ~0.8 s segment in
EXPLAIN ANALYZE). With the flags as columns of ``customer``, ``bench/plan.py``
went from 0.90-0.91 s to 0.79-0.81 s (best of 5, alternated with the previous
code; notes/3-selection.md, round 7). SQLite saves one primary-key look-up per
member (1.27-1.28 -> 1.23 s).

The flags mean what 0006 says (its SQL is reused as is: same expressions, same
source tables), and triggers keep them exact in the transaction of every change,
as before: the refresh is now ``UPDATE customer ... FROM (the recomputed flags)``,
writing only the rows whose flags change (PostgreSQL writes a new version of the
whole customer row: a consent import that changes nothing rewrites nothing).

- Customer inserts: a new row has no consent and no device yet (foreign keys), so
  its flags are 0 unless an address is already suppressed (or the insert wrote
  flags of its own): only those rows are refreshed.
- Address changes: a row trigger ``AFTER UPDATE OF email, phone`` on both databases,
  so the refresh's own UPDATE of the flag columns does not fire it (PostgreSQL
  allows no column list on a trigger with transition tables).
- Consent, device, suppression: as in 0006 (SQLite: the cheap insert paths of an
  import and a full refresh of the customer otherwise; PostgreSQL: one set-based
  refresh per statement over the transition tables).

Revision ID: 0010
Revises: 0009
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _load_0006():  # noqa: ANN202  (a module)
    """0006's module: its flag expressions are reused, not copied (the flags mean the same)."""
    spec = importlib.util.spec_from_file_location(
        "reach_0006", Path(__file__).with_name("0006_customer_reach.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REACH = _load_0006()
FLAGS = REACH.FLAGS
NOT_ZERO = " OR ".join(f"{{row}}.{f} <> 0" for f in FLAGS)


def refresh_sql(where: str, materialized: bool = False) -> str:
    """Recompute the flags of the customers matching ``where`` (alias ``c``); write the rows that change.

    ``materialized`` (PostgreSQL): the recomputed flags as a MATERIALIZED CTE, so that the planner does
    not fold them into the UPDATE's filter. Folded, the EXISTS of a flag became a hashed subplan (a
    hash of every granted consent) whenever the tables looked small to the planner, as they do
    during the first import into a new database: one statement per consent row then read the whole
    table, and a 20,000-customer import ran at 235 rows/s instead of ~4,000.
    """
    cols = ", ".join(f"{REACH._flag(REACH.EXPRESSIONS[f])} AS {f}" for f in FLAGS)
    sets = ", ".join(f"{f} = x.{f}" for f in FLAGS)
    changed = " OR ".join(f"customer.{f} <> x.{f}" for f in FLAGS)
    flags = f"SELECT c.id, {cols} FROM customer c WHERE {where}"
    update = f"UPDATE customer SET {sets} FROM {'x' if materialized else f'({flags}) AS x'}"
    prefix = f"WITH x AS MATERIALIZED ({flags}) " if materialized else ""
    return f"{prefix}{update} WHERE customer.id = x.id AND ({changed})"


def _needs_refresh(row: str) -> str:
    """A new customer whose flags may not be 0: an address already suppressed, or flags set by the insert."""
    return (
        f"{NOT_ZERO.format(row=row)} OR "
        f"EXISTS (SELECT 1 FROM suppression s WHERE s.address IN ({row}.email, {row}.phone))"
    )


ADDRESS_CHANGED = "NEW.email IS DISTINCT FROM OLD.email OR NEW.phone IS DISTINCT FROM OLD.phone"
VALID = {"email": "email IS NOT NULL AND email <> ''", "sms": "phone IS NOT NULL AND phone <> ''"}


def _set_if_changed(flag: str, value: str) -> str:
    return f"UPDATE customer SET {flag} = {value} WHERE id = NEW.customer_id AND {flag} <> {value}"


def _sqlite_triggers() -> list[str]:
    """Row-level triggers: the cheap insert paths of an import, a full refresh of the customer otherwise."""
    out = [
        f"CREATE TRIGGER reach_customer_insert AFTER INSERT ON customer WHEN {_needs_refresh('NEW')} "
        f"BEGIN {refresh_sql('c.id = NEW.id')}; END",
        "CREATE TRIGGER reach_customer_update AFTER UPDATE OF email, phone ON customer "
        f"WHEN {ADDRESS_CHANGED.replace('IS DISTINCT FROM', 'IS NOT')} "
        f"BEGIN {refresh_sql('c.id = NEW.id')}; END",
    ]
    for ch, valid in VALID.items():  # an inserted consent row had no predecessor: only its flag moves
        value = REACH._flag(f"NEW.status = 'granted' AND {valid}")
        out.append(
            f"CREATE TRIGGER reach_consent_insert_{ch} AFTER INSERT ON consent WHEN NEW.channel = '{ch}' "
            f"BEGIN {_set_if_changed(f'consent_{ch}', value)}; END"
        )
    active = "EXISTS (SELECT 1 FROM device d WHERE d.customer_id = NEW.customer_id AND d.active = TRUE)"
    push = _set_if_changed("consent_push", REACH._flag(f"NEW.status = 'granted' AND {active}"))
    out.append(
        "CREATE TRIGGER reach_consent_insert_push AFTER INSERT ON consent WHEN NEW.channel = 'push' "
        f"BEGIN {push}; END"
    )
    granted = REACH._granted("push").replace("c.id", "NEW.customer_id")
    out.append(
        "CREATE TRIGGER reach_device_insert AFTER INSERT ON device WHEN NEW.active "
        f"BEGIN {_set_if_changed('consent_push', REACH._flag(granted))}; END"
    )
    for table, where in REACH.SOURCES.items():
        if table == "suppression":
            out.append(
                f"CREATE TRIGGER reach_{table}_insert AFTER INSERT ON {table} "
                f"BEGIN {refresh_sql(where.format(row='NEW'))}; END"
            )
        out.append(
            f"CREATE TRIGGER reach_{table}_update AFTER UPDATE ON {table} WHEN {REACH._changed(table)} BEGIN "
            f"{refresh_sql(where.format(row='OLD'))}; {refresh_sql(where.format(row='NEW'))}; END"
        )
        out.append(
            f"CREATE TRIGGER reach_{table}_delete AFTER DELETE ON {table} "
            f"BEGIN {refresh_sql(where.format(row='OLD'))}; END"
        )
    return out


def _pg_function(name: str, body: str) -> str:
    return (
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body}; RETURN NULL; END $$"
    )


def _pg_statement_trigger(table: str, event: str, where: str) -> list[str]:
    name = f"reach_{table}_{event}"
    return [
        _pg_function(name, refresh_sql(where, materialized=True)),
        f"CREATE TRIGGER {name} AFTER {event.upper()} ON {table} {REACH.PG_EVENTS[event][0]} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()",
    ]


def _postgresql_triggers() -> list[str]:
    out = []
    for table, key in REACH.PG_KEYS.items():
        for event, (_, rows) in REACH.PG_EVENTS.items():
            out += _pg_statement_trigger(table, event, key(rows))
    new_rows = f"c.id IN (SELECT n.id FROM new_rows n WHERE {_needs_refresh('n')})"
    out += _pg_statement_trigger("customer", "insert", new_rows)
    out += [
        _pg_function("reach_customer_update", refresh_sql("c.id = NEW.id", materialized=True)),
        "CREATE TRIGGER reach_customer_update AFTER UPDATE OF email, phone ON customer FOR EACH ROW "
        f"WHEN ({ADDRESS_CHANGED}) EXECUTE FUNCTION reach_customer_update()",
    ]
    return out


def _drop_triggers() -> None:
    """The reach triggers of either layout (0006's or this one's): same names on both."""
    if op.get_bind().dialect.name == "postgresql":
        tables = [*REACH.PG_KEYS, "customer"]
        names = [f"reach_{t}_{e}" for t in tables for e in REACH.PG_EVENTS]
        for name in names:
            op.execute(f"DROP FUNCTION IF EXISTS {name}() CASCADE")
        return
    names = op.get_bind().exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'reach_%'"
    )
    for (name,) in names.all():
        op.execute(f"DROP TRIGGER {name}")


def upgrade() -> None:
    _drop_triggers()
    for flag in FLAGS:
        op.add_column("customer", sa.Column(flag, sa.SmallInteger(), nullable=False, server_default="0"))
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.execute(refresh_sql("TRUE", materialized=postgresql))  # the existing base, once
    op.drop_table("customer_reach")
    for ddl in _postgresql_triggers() if postgresql else _sqlite_triggers():
        op.execute(ddl)


def downgrade() -> None:
    _drop_triggers()
    op.create_table(
        "customer_reach",
        sa.Column(
            "customer_id", sa.Integer(), sa.ForeignKey("customer.id", ondelete="CASCADE"), primary_key=True
        ),
        *[sa.Column(f, sa.SmallInteger(), nullable=False, server_default="0") for f in FLAGS],
    )
    op.execute(REACH.refresh_sql("TRUE"))
    postgresql = op.get_bind().dialect.name == "postgresql"
    for ddl in REACH._postgresql_triggers() if postgresql else REACH._sqlite_triggers():
        op.execute(ddl)
    for flag in FLAGS:
        op.drop_column("customer", flag)
