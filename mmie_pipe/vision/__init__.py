"""Helpers of the vision front end (labels, box filtering, text views, caption sources)."""
