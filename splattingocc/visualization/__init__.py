"""Figures (matplotlib) and the class colour table."""
