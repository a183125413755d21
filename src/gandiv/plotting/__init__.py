"""Figures: functions take arrays and return matplotlib figures; the caller saves them."""
