"""``python -m bench.privacy_study``: see :mod:`bench.privacy_study`."""

from . import main

raise SystemExit(main())
