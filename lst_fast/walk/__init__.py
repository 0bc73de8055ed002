"""The walk: Level Set Traversal itself (traverse, LevelSetTraversal, their settings, call plans,
precisions, batching and result)."""
