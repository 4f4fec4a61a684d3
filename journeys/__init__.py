"""Journeys: follow-ups across channels over days, customers x steps held in SQL.

Empty for now: the room is decided (issue 23) so that journeys land next to delivery. A tick moves
due entries with one statement per step kind; send steps write ledger rows and reuse delivery.
"""
