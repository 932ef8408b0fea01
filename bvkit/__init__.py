"""bvkit: bias-variance analysis of long-tailed recognition, with RIDE bundled.

Data flows one way: data -> subsets -> train -> predictions -> decompose -> report, and each
layer imports only those below it (``docs/architecture.md``). ``import bvkit`` loads neither
torch nor the training code.
"""

__version__ = "0.1.0"

from bvkit.decomposition import decompose  # noqa: E402  (after __version__: submodules read it)
from bvkit.errors import BvkitError  # noqa: E402
from bvkit.study.reader import load_study  # noqa: E402

__all__ = ["BvkitError", "__version__", "decompose", "load_study"]
