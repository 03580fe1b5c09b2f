"""Importers that turn public benchmark tables into outcome records."""
