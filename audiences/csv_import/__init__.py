"""CSV imports of the customer base: customers, orders, suppressions, devices (see audiences/README.md)."""

from audiences.csv_import.report import ImportReport, Problem
from audiences.csv_import.runner import KINDS, run_import
from audiences.csv_import.source import FileRefused

__all__ = ["KINDS", "FileRefused", "ImportReport", "Problem", "run_import"]
