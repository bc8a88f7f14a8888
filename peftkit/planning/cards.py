"""The GPU memory sizes hobbyists own, and reading a size the user types (--memory 12GB).

A card sold as "24 GB" reports 24 GiB (24,564 MiB on an RTX 4090), so a card of N GB holds N GiB here, and
--memory reads GB and GiB alike as GiB (MB / MiB as MiB).
"""

from __future__ import annotations

import re

from ..errors import PeftkitError

GiB = 2**30
CARDS_GB = (8, 12, 16, 24, 48, 80)  # e.g. RTX 4060 / 3060 / 4060 Ti 16G / 4090 / A6000 / A100-H100 80G
UNITS = {"": GiB, "g": GiB, "gb": GiB, "gib": GiB, "m": 2**20, "mb": 2**20, "mib": 2**20, "t": 2**40, "tb": 2**40,
         "tib": 2**40}


def fits(peak_bytes: int) -> dict[str, bool]:
    """Card size ("24GB") -> whether a job of this peak fits on it."""
    return {f"{gb}GB": peak_bytes <= gb * GiB for gb in CARDS_GB}


def parse_memory(text: str) -> int:
    """'12GB', '12 GiB', '11000MB', '12' (GB) -> bytes; anything else is a one-line error naming --memory."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text or "")
    unit = match.group(2).lower() if match else None
    if not match or unit not in UNITS or float(match.group(1)) <= 0:
        raise PeftkitError(f"--memory {text!r}: give a size like 12GB, 24GiB or 11000MB")
    return int(float(match.group(1)) * UNITS[unit])
