"""lst_fast: fast Level Set Traversal for finding and measuring the blind spots of vision models."""

from lst_fast import ops
from lst_fast.backends._extension import backend_info
from lst_fast.version import __version__
from lst_fast.walk.result import TraversalResult
from lst_fast.walk.settings import LSTSettings
from lst_fast.walk.traversal import LevelSetTraversal, traverse

__all__ = ["LSTSettings", "LevelSetTraversal", "TraversalResult", "backend_info", "ops", "traverse", "__version__"]
