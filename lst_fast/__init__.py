"""lst_fast: fast Level Set Traversal for finding and measuring the blind spots of vision models."""

from lst_fast import ops
from lst_fast._extension import backend_info
from lst_fast.result import TraversalResult
from lst_fast.settings import LSTSettings
from lst_fast.traversal import LevelSetTraversal, traverse
from lst_fast.version import __version__

__all__ = ["LSTSettings", "LevelSetTraversal", "TraversalResult", "backend_info", "ops", "traverse", "__version__"]
