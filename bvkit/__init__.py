"""bvkit: bias-variance analysis of long-tailed recognition, with RIDE bundled.

Layers, each usable alone: ``bvkit.data`` -> ``bvkit.models`` / ``bvkit.losses`` ->
``bvkit.train`` -> ``bvkit.study`` -> ``bvkit.decompose`` -> ``bvkit.report``.
``import bvkit`` loads neither torch nor the training code.
"""

__version__ = "0.1.0"

from bvkit import decompose  # noqa: E402  (after __version__: submodules read it)
from bvkit.errors import BvkitError
from bvkit.study import load_study

__all__ = ["BvkitError", "__version__", "decompose", "load_study"]
