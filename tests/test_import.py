"""CSV imports on SQLite and PostgreSQL: good, bad and malformed files, idempotence, consent rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from audiences import consent
from audiences.importer import (
    FileRefused,
    import_customers,
    import_devices,
    import_orders,
    import_suppressions,
)
from core.models import Consent, ConsentEvent, Customer, CustomerInterest, Device, Order, Suppression

DATA = Path(__file__).parent / "data"


def _count(engine, model) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model.__table__)).scalar_one()


def _customer(engine, external_id: str) -> dict:
    t = Customer.__table__
    with engine.connect() as conn:
        return dict(conn.execute(select(t).where(t.c.external_id == external_id)).mappings().one())


def _consents(engine, external_id: str) -> dict[str, tuple[str, str]]:
    c, t = Customer.__table__, Consent.__table__
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.c.channel, t.c.status, t.c.source)
            .join(c, c.c.id == t.c.customer_id)
            .where(c.c.external_id == external_id)
        )
        return {ch: (status, source) for ch, status, source in rows}


def test_good_customers_are_normalized_and_reimport_is_a_noop(engine):
    report = import_customers(DATA / "customers.csv", engine)
    assert (report.rows, report.inserted, len(report.rejected)) == (4, 4, 0)

    jeanne = _customer(engine, "C001")
    assert jeanne["email"] == "jeanne.dupont@example.fr"
    assert jeanne["phone"] == "+33612345678"
    assert str(jeanne["signup_date"]) == "2023-01-15"
    emile = _customer(engine, "C002")
    assert (emile["phone"], emile["locale"], emile["timezone"]) == ("+33781234567", "fr_FR", "Europe/Paris")
    zoe = _customer(engine, "C003")
    assert (zoe["phone"], zoe["timezone"], str(zoe["signup_date"])) == (
        "+590690123456",
        "America/Guadeloupe",
        "2024-03-15",
    )
    assert _customer(engine, "C004")["phone"] == "+447811234567"

    assert _consents(engine, "C001") == {"email": ("granted", "website"), "sms": ("withdrawn", "website")}
    assert _consents(engine, "C002") == {ch: ("granted", "checkout") for ch in ("email", "sms", "push")}
    with engine.connect() as conn:
        tags = (
            conn.execute(
                select(CustomerInterest.tag)
                .join(Customer)
                .where(Customer.external_id == "C003")
                .order_by("tag")
            )
            .scalars()
            .all()
        )
        proof = conn.execute(
            select(ConsentEvent.proof, ConsentEvent.at).where(ConsentEvent.channel == "email").order_by("id")
        ).first()
    assert tags == ["beaute", "maison", "mode"]
    assert proof[0] == "newsletter form v2" and proof[1].isoformat() == "2023-01-15T09:00:00+00:00"
    events = _count(engine, ConsentEvent)
    assert events == 7

    again = import_customers(DATA / "customers.csv", engine)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 4)
    assert _count(engine, ConsentEvent) == events  # no new history for an unchanged consent
    assert _count(engine, Customer) == 4


def test_changed_rows_update_profile_interests_and_consent_history(engine, tmp_path):
    import_customers(DATA / "customers.csv", engine)
    changed = tmp_path / "changed.csv"
    changed.write_text(
        "external_id,city,interests,consent_sms,consent_source\n"
        "C001,Villeurbanne,running|yoga,yes,sms-keyword\n"
        "C005,Nantes,,yes,\n",
        encoding="utf-8",
    )
    report = import_customers(changed, engine)
    assert (report.inserted, report.updated) == (1, 1)
    jeanne = _customer(engine, "C001")
    assert (
        jeanne["city"] == "Villeurbanne" and jeanne["email"] == "jeanne.dupont@example.fr"
    )  # untouched column
    assert _consents(engine, "C001")["sms"] == ("granted", "sms-keyword")
    with engine.connect() as conn:
        tags = (
            conn.execute(
                select(CustomerInterest.tag)
                .join(Customer)
                .where(Customer.external_id == "C001")
                .order_by("tag")
            )
            .scalars()
            .all()
        )
        history = (
            conn.execute(
                select(ConsentEvent.status)
                .join(Customer, Customer.id == ConsentEvent.customer_id)
                .where(Customer.external_id == "C001", ConsentEvent.channel == "sms")
                .order_by(ConsentEvent.id)
            )
            .scalars()
            .all()
        )
    assert tags == ["running", "yoga"]
    assert history == ["withdrawn", "granted"]
    assert _customer(engine, "C005")["locale"] == "fr_FR"


def test_bad_rows_are_rejected_with_line_and_reason_and_good_rows_kept(engine):
    report = import_customers(DATA / "customers_bad.csv", engine)
    reasons = {p.line: p.reason for p in report.rejected}
    assert set(reasons) == {3, 4, 5, 6, 7, 8, 9}
    assert "not a valid address" in reasons[3]
    assert "phone '06 12 34' is not a valid number" in reasons[4]
    assert "consent_email 'maybe' is not yes/no" in reasons[5]
    assert "signup_date '2024-13-45' is not a date" in reasons[6]
    assert "4 cells but the header has 5 columns" in reasons[7]
    assert "external_id is empty" in reasons[8]
    assert reasons[9] == "duplicate external_id 'B001': already on line 2, which is kept"
    assert report.inserted == 2
    assert _customer(engine, "B001")["email"] == "ok@example.fr"  # the first occurrence wins
    assert _customer(engine, "B009")["phone"] == "+33612345679"


def test_duplicates_across_chunks_are_found(engine, tmp_path):
    f = tmp_path / "dups.csv"
    f.write_text(
        "external_id,email\n" + "".join(f"D{i % 7},d{i}@example.fr\n" for i in range(20)), encoding="utf-8"
    )
    report = import_customers(f, engine, chunk_rows=3)
    assert report.inserted == 7 and len(report.rejected) == 13
    first = next(p for p in report.rejected if p.key == "D0")
    assert (first.line, first.reason) == (9, "duplicate external_id 'D0': already on line 2, which is kept")
    assert _customer(engine, "D0")["email"] == "d0@example.fr"


def test_wrong_header_refuses_the_whole_file(engine):
    with pytest.raises(FileRefused) as exc:
        import_customers(DATA / "customers_wrong_header.csv", engine)
    message = str(exc.value)
    assert "missing column(s): external_id" in message
    assert "unknown column(s): 'id', 'e-mail' (did you mean 'email'?)" in message
    assert _count(engine, Customer) == 0


def test_wrong_encoding_is_refused_with_its_line(engine, tmp_path):
    latin = tmp_path / "latin1.csv"
    latin.write_bytes((DATA / "customers.csv").read_text(encoding="utf-8").encode("cp1252"))
    with pytest.raises(FileRefused, match=r"line 3 is not valid UTF-8 \(byte 0xc9.*--encoding cp1252"):
        import_customers(latin, engine)
    assert _count(engine, Customer) == 0
    report = import_customers(latin, engine, encoding="cp1252")
    assert report.inserted == 4 and _customer(engine, "C002")["first_name"] == "Émile"


def test_semicolon_files_and_bom_are_read(engine, tmp_path):
    f = tmp_path / "excel.csv"
    f.write_bytes("\ufeffexternal_id;email;consent_email\r\nX1;x1@example.fr;oui\r\n".encode())
    report = import_customers(f, engine)
    assert report.inserted == 1 and _consents(engine, "X1") == {"email": ("granted", "import")}


def test_orders_reference_customers_and_are_upserted(engine):
    import_customers(DATA / "customers.csv", engine)
    report = import_orders(DATA / "orders.csv", engine)
    reasons = {p.line: p.reason for p in report.rejected}
    assert report.inserted == 4
    assert "customer 'C999' is not in the customer base" in reasons[6]
    assert "ordered_at 'yesterday' is not a date-time" in reasons[7]
    assert "duplicate order external_id 'O1': already on line 2" in reasons[8]
    with engine.connect() as conn:
        amounts = dict(conn.execute(select(Order.external_id, Order.amount_cents)).all())
    assert amounts == {"O1": 5000, "O2": 3000, "O3": 2000, "O4": 10000}
    again = import_orders(DATA / "orders.csv", engine)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 4)


def test_suppression_list_import_withdraws_matching_consent(engine):
    import_customers(DATA / "customers.csv", engine)
    report = import_suppressions(DATA / "suppressions.csv", engine)
    assert report.inserted == 3 and [p.line for p in report.rejected] == [5]
    assert _consents(engine, "C002")["email"] == ("withdrawn", "suppression-import")
    assert _consents(engine, "C002")["sms"] == ("withdrawn", "suppression-import")
    assert _consents(engine, "C002")["push"][0] == "granted"
    with engine.connect() as conn:
        assert consent.is_suppressed(conn, "emile.zola@example.fr", "email")
        assert not consent.is_suppressed(conn, "emile.zola@example.fr", "sms")
    assert import_suppressions(DATA / "suppressions.csv", engine).unchanged == 3
    assert _count(engine, Suppression) == 3


def test_devices_import(engine):
    import_customers(DATA / "customers.csv", engine)
    report = import_devices(DATA / "devices.csv", engine)
    assert report.inserted == 2
    reasons = {p.line: p.reason for p in report.rejected}
    assert set(reasons) == {4, 5}
    assert reasons[4].startswith("customer 'C999' is not in the customer base")
    assert reasons[5].startswith("platform 'fridge' is not one of ios, android, web")
    with engine.connect() as conn:
        active = dict(conn.execute(select(Device.token, Device.active)).all())
    assert active == {"tok-aaa": True, "tok-bbb": False}


def test_erased_address_under_a_new_id_comes_back_without_consent(engine, tmp_path):
    with engine.begin() as conn:
        consent.suppress(conn, consent.address_hash("emile.zola@example.fr"), "erased", source="forget")
    report = import_customers(DATA / "customers.csv", engine)
    assert report.inserted == 4
    assert [(p.line, p.key) for p in report.warnings] == [(3, "C002")]
    assert "erased customer" in report.warnings[0].reason
    assert _consents(engine, "C002") == {
        ch: ("withdrawn", "erased-suppression") for ch in ("email", "sms", "push")
    }
    assert _consents(engine, "C001")["email"] == ("granted", "website")


def test_a_large_file_goes_through_worker_processes(sqlite_engine, tmp_path):
    """The parallel path (validation in spawned processes) gives the same result as the inline one."""
    src = (DATA / "customers.csv").read_text(encoding="utf-8").splitlines()
    big = tmp_path / "big.csv"
    rows = [src[0]] + [f"K{i:05d}" + line[4:] for i in range(3000) for line in src[1:2]]
    big.write_text("\n".join(rows) + "\n", encoding="utf-8")
    report = import_customers(big, sqlite_engine, workers=2, chunk_rows=500)
    assert report.inserted == 3000 and not report.rejected
    with sqlite_engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM consent_event")).scalar_one() == 6000


def test_missing_file_is_refused(engine, tmp_path):
    with pytest.raises(FileRefused, match="no such file"):
        import_customers(tmp_path / "nope.csv", engine)
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(FileRefused, match="the file is empty"):
        import_customers(empty, engine)


@pytest.mark.parametrize("chunk_rows", [1, 2, 1000])
def test_quoted_line_breaks_keep_line_numbers_whatever_the_chunk_size(sqlite_engine, tmp_path, chunk_rows):
    """Blocks of raw text go to the workers: a quoted line break never splits a record or shifts lines."""
    f = tmp_path / "multiline.csv"
    f.write_text(
        "external_id,city,consent_proof\n"
        'M1,Paris,"signed form\nscanned ""v2"""\n'
        "\n"
        'M2,"Saint-\nDenis",web\n'
        "M3,Lyon,web,extra\n"
        "M4,Nice,web\n",
        encoding="utf-8",
    )
    report = import_customers(f, sqlite_engine, chunk_rows=chunk_rows)
    assert report.inserted == 3
    assert [(p.line, p.key) for p in report.rejected] == [(7, "M3")]
    assert _customer(sqlite_engine, "M2")["city"] == "Saint-\nDenis"


def test_values_written_by_the_driver_path_read_back_like_orm_ones(engine):
    """The importer sends dates as the text SQLAlchemy itself stores on SQLite: they must read back equal."""
    from datetime import UTC, date, datetime

    from core.db import session_scope

    f = DATA / "customers.csv"
    import_customers(f, engine)
    with session_scope(engine) as s:
        s.add(Customer(external_id="ORM1", signup_date=date(2026, 3, 31)))
    orm, imported = _customer(engine, "ORM1"), _customer(engine, "C001")
    assert type(orm["signup_date"]) is type(imported["signup_date"]) is date
    assert imported["created_at"].tzinfo is not None and orm["created_at"].tzinfo is not None
    assert abs(imported["created_at"] - datetime.now(UTC)).total_seconds() < 600
    e, c = ConsentEvent.__table__, Customer.__table__
    with engine.connect() as conn:
        at = conn.execute(
            select(e.c.at)
            .join(c, c.c.id == e.c.customer_id)
            .where(c.c.external_id == "C001", e.c.channel == "email")
        ).scalar_one()
    assert at == datetime(2023, 1, 15, 9, 0, tzinfo=UTC)  # 10:00+01:00 in the file
