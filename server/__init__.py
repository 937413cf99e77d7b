"""Flower ServerApp for fedalign (a thin adapter over :mod:`fedalign.server`)."""
