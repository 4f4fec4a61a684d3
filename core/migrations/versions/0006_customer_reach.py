"""Selection: ``customer_reach``, who can be reached on which channel, kept exact by triggers.

One row per customer with six 0/1 flags: ``consent_<channel>`` (consent granted
AND a valid address: an e-mail, a phone number, an active push device) and
``suppressed_<channel>`` (the channel's own address is on that channel's list or
on '*', or any address of the customer is on '*'). The plan and the run join this
one narrow table on its primary key instead of three consent rows, the devices
and two suppression look-ups per customer (``audiences.selection``).

Why triggers and not code: consent, devices, suppressions and addresses change
through many paths (imports, unsubscribe links, STOP replies, bounces, provider
errors, erasure, an operator's SQL). A trigger recomputes the customer's row in
the same transaction as the change, whatever wrote it, so the flags can never
lag behind the tables they summarize (tests/test_reach.py compares them with a
computation from the source tables after every kind of change). The recompute
is the same SQL on SQLite and PostgreSQL; only the trigger wrapping differs.

Also an index on customer.erased_at: the plan counts the base as every
customer minus the erased ones (a bare count is a b-tree walk; the filtered
count read every row).

The SQL lives here, frozen with the schema it was written for: a later change
of the rules is a new migration, not an edit of this one.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FLAGS = (
    "consent_email",
    "consent_sms",
    "consent_push",
    "suppressed_email",
    "suppressed_sms",
    "suppressed_push",
)


def _granted(channel: str) -> str:
    return (
        "EXISTS (SELECT 1 FROM consent k WHERE k.customer_id = c.id "
        f"AND k.channel = '{channel}' AND k.status = 'granted')"
    )


def _on_list(own: str, channels: str) -> str:
    """An address of the customer on '*', or the channel's own address(es) ``own`` on ``channels``."""
    return (
        "EXISTS (SELECT 1 FROM suppression s WHERE s.address IN (c.email, c.phone) "
        f"AND (s.channel = '*' OR (s.channel IN ({channels}) AND s.address IN ({own}))))"
    )


EXPRESSIONS = {
    "consent_email": f"c.email IS NOT NULL AND c.email <> '' AND {_granted('email')}",
    "consent_sms": f"c.phone IS NOT NULL AND c.phone <> '' AND {_granted('sms')}",
    "consent_push": (
        f"{_granted('push')} AND "
        "EXISTS (SELECT 1 FROM device d WHERE d.customer_id = c.id AND d.active = TRUE)"
    ),
    "suppressed_email": _on_list("c.email", "'email'"),
    "suppressed_sms": _on_list("c.phone", "'sms'"),
    "suppressed_push": _on_list("c.email, c.phone", "'push'"),
}


def _flag(expr: str) -> str:
    return f"CASE WHEN {expr} THEN 1 ELSE 0 END"


def refresh_sql(where: str) -> str:
    """Upsert the reach rows of the customers matching ``where`` (alias ``c`` = customer)."""
    cols = ", ".join(_flag(EXPRESSIONS[f]) for f in FLAGS)
    updates = ", ".join(f"{f} = excluded.{f}" for f in FLAGS)
    return (
        f"INSERT INTO customer_reach (customer_id, {', '.join(FLAGS)}) "
        f"SELECT c.id, {cols} FROM customer c WHERE {where} "
        f"ON CONFLICT (customer_id) DO UPDATE SET {updates}"
    )


# SQLite: row-level triggers; table -> the WHERE over customer c naming the changed row's customers
BY_CUSTOMER = "c.id = {row}.customer_id"
BY_ADDRESS = "c.id IN (SELECT id FROM customer WHERE email = {row}.address UNION SELECT id FROM customer WHERE phone = {row}.address)"  # noqa: E501
SOURCES = {
    "consent": BY_CUSTOMER,
    "device": BY_CUSTOMER,
    "suppression": BY_ADDRESS,
}
# the columns whose change can change a flag: other updates (timestamps, proofs) skip the refresh
WATCHED = {
    "consent": ("customer_id", "channel", "status"),
    "device": ("customer_id", "active"),
    "suppression": ("address", "channel"),
}


def _changed(table: str) -> str:
    return " OR ".join(f"NEW.{col} IS NOT OLD.{col}" for col in WATCHED[table])


def _sqlite_insert_triggers() -> list[str]:
    """The bulk paths of an import (new customers, their consents, their devices) change only what
    the new row can change, in two or three index look-ups, instead of the full refresh: a
    customer row that has just been inserted has no consent and no device yet (foreign keys),
    and an inserted consent row had no predecessor (an existing one fires the update trigger)."""
    new_customer = [
        "INSERT INTO customer_reach (customer_id) VALUES (NEW.id)",
        "UPDATE customer_reach SET "
        + ", ".join(f"{f} = {_flag(EXPRESSIONS[f].replace('c.', 'NEW.'))}" for f in FLAGS[3:])
        + " WHERE customer_id = NEW.id AND EXISTS "
        "(SELECT 1 FROM suppression WHERE address IN (NEW.email, NEW.phone))",
    ]
    address = {
        "email": "c.email IS NOT NULL AND c.email <> ''",
        "sms": "c.phone IS NOT NULL AND c.phone <> ''",
    }
    out = [
        "CREATE TRIGGER reach_customer_insert AFTER INSERT ON customer BEGIN "
        + "; ".join(new_customer)
        + "; END"
    ]
    for ch, valid in address.items():
        value = _flag(
            "NEW.status = 'granted' AND EXISTS "
            f"(SELECT 1 FROM customer c WHERE c.id = NEW.customer_id AND {valid})"
        )
        out.append(
            f"CREATE TRIGGER reach_consent_insert_{ch} AFTER INSERT ON consent "
            f"WHEN NEW.channel = '{ch}' BEGIN "
            f"UPDATE customer_reach SET consent_{ch} = {value} WHERE customer_id = NEW.customer_id; END"
        )
    active = "EXISTS (SELECT 1 FROM device d WHERE d.customer_id = NEW.customer_id AND d.active = TRUE)"
    value = _flag(f"NEW.status = 'granted' AND {active}")
    out.append(
        "CREATE TRIGGER reach_consent_insert_push AFTER INSERT ON consent WHEN NEW.channel = 'push' BEGIN "
        f"UPDATE customer_reach SET consent_push = {value} WHERE customer_id = NEW.customer_id; END"
    )
    granted = _granted("push").replace("c.id", "NEW.customer_id")
    out.append(
        "CREATE TRIGGER reach_device_insert AFTER INSERT ON device WHEN NEW.active BEGIN "
        f"UPDATE customer_reach SET consent_push = {_flag(granted)} WHERE customer_id = NEW.customer_id; END"
    )
    return out


def _sqlite_triggers() -> list[str]:
    """Row-level triggers: the cheap insert paths, and a full refresh of the customer's row otherwise."""
    out = _sqlite_insert_triggers()
    for table, where in SOURCES.items():
        if table == "suppression":
            out.append(
                f"CREATE TRIGGER reach_{table}_insert AFTER INSERT ON {table} "
                f"BEGIN {refresh_sql(where.format(row='NEW'))}; END"
            )
        out.append(
            f"CREATE TRIGGER reach_{table}_update AFTER UPDATE ON {table} WHEN {_changed(table)} BEGIN "
            f"{refresh_sql(where.format(row='OLD'))}; {refresh_sql(where.format(row='NEW'))}; END"
        )
        out.append(
            f"CREATE TRIGGER reach_{table}_delete AFTER DELETE ON {table} "
            f"BEGIN {refresh_sql(where.format(row='OLD'))}; END"
        )
    out.append(
        "CREATE TRIGGER reach_customer_update AFTER UPDATE OF email, phone ON customer "
        "WHEN NEW.email IS NOT OLD.email OR NEW.phone IS NOT OLD.phone "
        f"BEGIN {refresh_sql('c.id = NEW.id')}; END"
    )
    return out


# PostgreSQL: statement-level triggers over the transition tables (new_rows / old_rows), so a bulk
# import refreshes its customers in one set-based statement instead of once per row.
PG_EVENTS = {
    "insert": ("REFERENCING NEW TABLE AS new_rows", ("new_rows",)),
    "update": ("REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows", ("old_rows", "new_rows")),
    "delete": ("REFERENCING OLD TABLE AS old_rows", ("old_rows",)),
}


def _by_customer(rows: tuple[str, ...]) -> str:
    return "c.id IN (" + " UNION ".join(f"SELECT customer_id FROM {r}" for r in rows) + ")"


def _by_address(rows: tuple[str, ...]) -> str:
    addresses = " UNION ".join(f"SELECT address FROM {r}" for r in rows)
    return (
        f"c.id IN (SELECT id FROM customer WHERE email IN ({addresses}) "
        f"UNION SELECT id FROM customer WHERE phone IN ({addresses}))"
    )


# table -> the WHERE over customer c for the changed rows of the transition table(s)
PG_KEYS = {"consent": _by_customer, "device": _by_customer, "suppression": _by_address}
CUSTOMER_CHANGED = (
    "c.id IN (SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id "
    "WHERE n.email IS DISTINCT FROM o.email OR n.phone IS DISTINCT FROM o.phone)"
)


def _pg_trigger(table: str, event: str, where: str) -> list[str]:
    name = f"reach_{table}_{event}"
    referencing = PG_EVENTS[event][0]
    return [
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"{refresh_sql(where)}; RETURN NULL; END $$",
        f"CREATE TRIGGER {name} AFTER {event.upper()} ON {table} {referencing} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()",
    ]


def _postgresql_triggers() -> list[str]:
    out = []
    for table, key in PG_KEYS.items():
        for event, (_, rows) in PG_EVENTS.items():
            out += _pg_trigger(table, event, key(rows))
    out += _pg_trigger("customer", "insert", "c.id IN (SELECT id FROM new_rows)")
    out += _pg_trigger("customer", "update", CUSTOMER_CHANGED)
    return out


def upgrade() -> None:
    op.create_table(
        "customer_reach",
        sa.Column(
            "customer_id", sa.Integer(), sa.ForeignKey("customer.id", ondelete="CASCADE"), primary_key=True
        ),
        *[sa.Column(f, sa.SmallInteger(), nullable=False, server_default="0") for f in FLAGS],
    )
    op.execute(refresh_sql("TRUE"))  # the existing base, once
    op.create_index("ix_customer_erased_at", "customer", ["erased_at"])  # the plan counts the erased
    dialect = op.get_bind().dialect.name
    for ddl in _postgresql_triggers() if dialect == "postgresql" else _sqlite_triggers():
        op.execute(ddl)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        names = [f"reach_{t}_{e}" for t in PG_KEYS for e in PG_EVENTS] + [
            "reach_customer_insert",
            "reach_customer_update",
        ]
        for name in names:
            op.execute(f"DROP FUNCTION IF EXISTS {name}() CASCADE")
    else:
        names = op.get_bind().exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'reach_%'"
        )
        for (name,) in names.all():
            op.execute(f"DROP TRIGGER {name}")
    op.drop_index("ix_customer_erased_at", table_name="customer")
    op.drop_table("customer_reach")
