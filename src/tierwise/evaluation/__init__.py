"""Evaluation: recorded outcomes as a matrix, routers scored on it, reports."""
