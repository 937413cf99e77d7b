"""Flower ClientApp for fedalign (a thin adapter over :mod:`fedalign.client`)."""
