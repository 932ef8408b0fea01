"""``python -m bvkit``: the same as the ``bvkit`` command."""

import sys

from bvkit.cli import main

sys.exit(main())
