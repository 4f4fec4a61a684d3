"""Sending: the ledger, batch claims, dispatch to providers, outcomes, run preparation.

Above channels (providers) and audiences (selection); tracking and reports read what it writes.
"""
