"""The helpers of single commands: the demo, `lst-fast run`, `lst-fast bench` and its baselines, the
figures and the image files."""
