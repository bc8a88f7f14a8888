"""The data layer: rows in any supported format -> masked, tokenized examples, batches, previews and stats."""

from .build import build_data
from .bundle import IGNORE, DataBundle, DataReport, SplitReport
from .collate import make_collator
from .pad import ensure_pad_token

__all__ = ["IGNORE", "DataBundle", "DataReport", "SplitReport", "build_data", "ensure_pad_token", "make_collator"]
