"""The visual run report: one self-contained HTML page for a run or a bench."""

from .build import ReportError, build_report

__all__ = ["ReportError", "build_report"]
