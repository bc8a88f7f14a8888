"""Base models: the offline zoo (zoo.py) and GGUF import (gguf_import.py)."""
