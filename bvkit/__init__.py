"""bvkit: bias-variance analysis of long-tailed recognition, with RIDE bundled.

Layers, each usable alone: ``bvkit.data`` -> ``bvkit.models`` / ``bvkit.losses`` ->
``bvkit.train`` -> ``bvkit.decompose`` -> ``bvkit.report``.
"""

from bvkit.errors import BvkitError

__version__ = "0.1.0"
__all__ = ["BvkitError", "__version__"]
