"""A base model's config.json, read without its weights, so `peftkit plan` can answer before any download.

Where it comes from, first match wins:
- `--config FILE` (the user's own config.json);
- a zoo alias: the config shipped here for it (the same the pulled folder holds), so plan works before `models pull`;
- a local Hugging Face folder: its config.json;
- a hub id: the Hugging Face cache when it holds the config (no network asked), else the config shipped here for
  that id (configs/<org>--<name>.json, the published values), else a one-line error asking for `--config FILE`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import PeftkitError
from ..modeling.zoo import ZOO, resolve_base

SHIPPED = Path(__file__).resolve().parent / "configs"


@dataclass(frozen=True)
class BaseConfig:
    values: dict  # config.json as read (a multimodal wrapper's text_config left inside)
    source: str  # where it came from, shown in the plan


def shipped_file(base: str) -> Path | None:
    """The config shipped for a zoo alias or hub id (hub ids case-insensitively, as the hub treats them)."""
    names = {base, base.replace("/", "--")}
    names |= {e.alias for e in ZOO.values() if e.upstream.lower() == base.lower()}
    lowered = {n.lower() for n in names}
    return next((f for f in sorted(SHIPPED.glob("*.json")) if f.stem.lower() in lowered), None)


def shipped_ids() -> list[str]:
    return sorted(f.stem.replace("--", "/") for f in SHIPPED.glob("*.json"))


def read_config(base: str, config_file: str | Path | None = None) -> BaseConfig:
    """The config of `model.base` (or of `config_file` when given). Raises a one-line PeftkitError."""
    if config_file is not None:
        return BaseConfig(_read_json(Path(config_file), "--config"), str(config_file))
    if base in ZOO:
        return BaseConfig(_read_json(shipped_file(base), "shipped config"), f"shipped config of zoo alias {base}")
    source = resolve_base(base)  # a local folder with a config.json, or a hub id; else its one-line ModelError
    if source.kind == "local":
        return BaseConfig(_read_json(Path(source.path_or_id) / "config.json", "model.base"), source.path_or_id)
    cached = _cached_hub_config(base)
    if cached is not None:
        return BaseConfig(cached, f"Hugging Face cache ({base})")
    shipped = shipped_file(base)
    if shipped is not None:
        return BaseConfig(_read_json(shipped, "shipped config"), f"shipped config of {base}")
    raise PeftkitError(f"model.base '{base}': its config.json is neither cached nor shipped with peftkit; "
                       "pass --config FILE (the model's config.json)")


def _cached_hub_config(model_id: str) -> dict | None:
    from transformers import AutoConfig

    try:  # local_files_only: the cache or nothing, never the network
        return AutoConfig.from_pretrained(model_id, local_files_only=True).to_dict()
    except (OSError, ValueError, KeyError):
        return None


def _read_json(file: Path, what: str) -> dict:
    try:
        values = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PeftkitError(f"{what} {file}: file not found") from None
    except (OSError, ValueError) as exc:
        raise PeftkitError(f"{what} {file}: not a readable JSON config ({type(exc).__name__})") from None
    if not isinstance(values, dict) or not isinstance(values.get("model_type"), str):
        raise PeftkitError(f"{what} {file}: not a model config.json (no model_type)")
    return values
