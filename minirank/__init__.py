"""minirank: LLM reranking, built to be read."""

__version__ = "0.1.0"

import os as _os

#: The one switch for heavy cells (GPU-size training, full benchmarks, big models). Off by default so
#: that every notebook runs on a 2-core laptop CPU; set MINIRANK_FULL_SCALE=1 (e.g. on Colab) to turn it on.
FULL_SCALE: bool = _os.environ.get("MINIRANK_FULL_SCALE", "0") not in ("", "0", "false", "False")

# tqdm.auto asks for ipywidgets inside Jupyter and warns when they are missing; plain bars are fine.
import warnings as _warnings

from tqdm import TqdmExperimentalWarning as _TqdmExperimentalWarning
from tqdm import TqdmWarning as _TqdmWarning

_warnings.filterwarnings("ignore", category=_TqdmWarning)
_warnings.filterwarnings("ignore", category=_TqdmExperimentalWarning)
