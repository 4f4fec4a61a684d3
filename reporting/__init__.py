"""Reporting: figures of a campaign, statistics, charts, the portfolio; HTML and CSV.

Reads what delivery and tracking wrote; writes nothing but report files.
"""
