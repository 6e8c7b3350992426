"""Offline HTML pages of every token of every block (results/explorer/)."""
