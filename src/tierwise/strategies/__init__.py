"""Strategies: how one task spends models (a single call, a cascade, an advisor, a plan)."""
