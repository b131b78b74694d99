"""Source kind ``python``: rows a Python function yields for each window."""
