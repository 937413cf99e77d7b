"""Run fedalign on Flower's deployment runtime: a SuperLink and one SuperNode per client.

The ClientApp and ServerApp are used unchanged; this package only prepares
certificates and keys (:mod:`deploy.certs`), builds and starts the Flower
commands, launches runs and reads their real status (:mod:`deploy.launch`),
with a command line in ``python -m deploy`` (see its ``--help``).
TLS and SuperNode authentication are on unless ``--insecure`` is asked for.

Kept out of :mod:`fedalign`, which never imports Flower.
"""
