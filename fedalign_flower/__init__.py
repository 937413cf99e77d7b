"""fedalign's Flower edge: the wire format on Flower records, the Simulation Runtime launcher, the command line.

The library (:mod:`fedalign`) never imports Flower; this package and the project's
Flower apps (``clients/client_app.py``, ``server/server_app.py``) are where Flower
is met.
"""
