"""Dataset sources: each turns a dataset on disk into plain records (see data/convert.py)."""
