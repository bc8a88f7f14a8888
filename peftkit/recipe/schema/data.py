"""`data:` — where examples come from, how they are rendered, masked and batched."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ._base import Section

Format = Literal[
    "alpaca", "chat", "completion", "prompt_completion", "classification", "preference", "unpaired_preference"
]
PREFERENCE_FORMATS = ("preference", "unpaired_preference")
ChatTemplate = Literal["auto", "tokenizer", "chatml", "llama3", "zephyr"]

# Logical column names each format reads; `data.columns` maps them to the names in the user's rows.
COLUMNS: dict[str, tuple[str, ...]] = {
    "alpaca": ("instruction", "input", "output", "system"),
    "chat": ("messages", "role", "content", "tools", "system"),
    "completion": ("text",),
    "prompt_completion": ("prompt", "completion", "system"),
    "classification": ("text", "text_pair", "label"),
    "preference": ("prompt", "chosen", "rejected", "system"),
    "unpaired_preference": ("prompt", "completion", "label", "system"),
}
ROLES = ("system", "user", "assistant", "tool")
HUB_DATASET_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name as the dataset hub spells it


def _no_nul(v: str | None) -> str | None:
    if v is not None and "\x00" in v:  # no OS takes it; refused here, where the key can be named
        raise ValueError("contains a NUL character")
    return v


def _path_or_hub(path: str | None, info: ValidationInfo) -> str | None:
    """A source's path may be left out when its hub names the data (hub is declared first, so it is in info.data)."""
    hub = info.data.get("hub")
    if path is None and hub is None and "hub" in info.data:  # (a bad hub is reported on its own)
        raise ValueError("required key is missing (a file, folder or builtin:NAME), unless hub names a hub dataset")
    if path is not None and hub is not None and path.startswith("builtin:"):
        raise ValueError("builtin data needs no hub source: drop hub")
    return _no_nul(path)


class HubSource(Section):
    """The public hub dataset a recipe's rows come from (the arguments of datasets.load_dataset)."""

    id: str = Field(..., description="hub dataset id, owner/name (e.g. Anthropic/hh-rlhf)")
    config: str | None = Field(None, description="the dataset's configuration, load_dataset's name (e.g. sst2 of "
                               "nyu-mll/glue)")
    data_dir: str | None = Field(None, description="folder inside the dataset repository (e.g. helpful-base of "
                                 "Anthropic/hh-rlhf)")
    split: str = Field("train", description="split read in place of the local path (e.g. train, test, "
                       "train+validation)")
    eval_split: str | None = Field(None, description="split read in place of data.eval_path (e.g. validation)")
    revision: str | None = Field(None, description="branch, tag or commit of the dataset repository (pins the rows)")

    @field_validator("id")
    @classmethod
    def _owner_name(cls, v: str) -> str:
        if not HUB_DATASET_ID.fullmatch(v):
            raise ValueError("is not a hub dataset id (owner/name)")
        return v


class MixSource(Section):
    hub: HubSource | None = Field(None, description="the public hub dataset of this source, read when path is "
                                  "unset or absent here (its split; eval_split does not apply)")
    path: str | None = Field(None, description="another data file or folder mixed into training (same format and "
                             "columns)")
    limit: int | None = Field(None, ge=1, description="use at most this many examples of this source")

    @field_validator("path")
    @classmethod
    def _path_or_hub(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _path_or_hub(v, info)

    @field_validator("hub")
    @classmethod
    def _no_eval_split(cls, v: HubSource | None) -> HubSource | None:
        if v is not None and v.eval_split is not None:
            raise ValueError("a mixed source is training data: eval_split does not apply")
        return v


class DataSpec(Section):
    format: Format = Field(
        ..., description="alpaca | chat | completion | prompt_completion | classification | preference (prompt, "
        "chosen, rejected) | unpaired_preference (prompt, completion, label: true/false)"
    )
    # hub before path: path's check reads it (a missing path is fine only when hub names the data)
    hub: HubSource | None = Field(
        None, description="the public hub dataset the rows come from, read when data.path is unset or absent here"
    )
    path: str | None = Field(
        None, description="data file or folder (relative to the recipe), a hub id, or builtin:NAME (peftkit data "
        "builtins); with data.hub it is the local copy, read when it exists"
    )
    eval_path: str | None = Field(None, description="held-out file; otherwise eval_fraction of path is held out")
    eval_fraction: float = Field(0.05, ge=0.0, lt=1.0, description="share of path held out when eval_path is unset")
    limit: int | None = Field(None, ge=1, description="use at most this many training examples")
    max_length: int = Field(1024, ge=8, description="tokens per example; longer ones are truncated and counted")
    train_on_inputs: bool = Field(False, description="also train on prompts / user turns (default: responses only)")
    packing: bool | Literal["auto"] = Field(
        "auto",
        description="one padding-free row per batch, attention kept within each example (no FLOP on pads); "
        "auto: on for causal LM data when activations are checkpointed, unless the adapter is prompt/prefix tuning",
    )
    seed: int | None = Field(None, description="shuffle seed (default: train.seed)")
    columns: dict[str, str] = Field(
        {},
        description="field names in your rows, e.g. {messages: conversations, text: sentence} (defaults: the logical names)",
    )
    chat_template: ChatTemplate = Field(
        "auto", description="auto (the tokenizer's, chatml if it has none), tokenizer, or a named one: chatml, llama3, zephyr"
    )
    prompt_template: str | None = Field(
        None,
        description="alpaca / prompt_completion: chat (via chat_template), alpaca (the classic text), or a format "
        "string with {instruction} {input} / {prompt}; default: chat for alpaca when a chat template exists, raw prompt "
        "for prompt_completion",
    )
    system_prompt: str | None = Field(None, description="system turn added to rows that have none")
    roles: dict[str, str] = Field(
        {},
        description="extra source role -> system|user|assistant|tool (human, gpt, function_call, observation are known)",
    )
    transcript_roles: dict[str, str] | None = Field(
        None,
        description="chat rows given as one text transcript: speaker marker -> role, e.g. {Human: user, Assistant: assistant}",
    )
    tools_prompt: str = Field(
        "You are a helpful assistant with access to the following functions. Use them if required:\n{tools}",
        description="system text for rows with a non-empty tools column; {tools} is replaced by the JSON list",
    )
    label_names: tuple[str, ...] | None = Field(
        None, description="classification: label names in id order (default: the sorted distinct labels)"
    )
    on_bad_row: Literal["error", "skip"] = Field(
        "error", description="error stops at the first bad row; skip drops it and counts it in the report"
    )
    mix: tuple[MixSource, ...] = Field((), description="more training sources mixed with path and shuffled together")

    @field_validator("path")
    @classmethod
    def _path_or_hub(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _path_or_hub(v, info)

    @model_validator(mode="after")
    def _eval_source(self):
        hub_eval = self.hub is not None and self.hub.eval_split is not None
        builtin = self.path is not None and self.path.startswith("builtin:")
        if self.eval_path is None and not hub_eval and self.eval_fraction == 0.0 and not builtin:
            raise ValueError("needs eval_path or eval_fraction > 0 to measure eval loss")
        if self.hub is not None and self.path is not None:  # the hub stands in for each local file
            if self.eval_path is not None and not hub_eval:
                raise ValueError("eval_path needs hub.eval_split: the hub split read in its place when it is absent")
            if self.eval_path is None and hub_eval:
                raise ValueError("hub.eval_split stands in for eval_path: set eval_path to its local copy, or drop "
                                 "eval_split (eval_fraction of the split is held out)")
        return self

    @model_validator(mode="after")
    def _columns_for_format(self):
        known = COLUMNS[self.format]
        unknown = sorted(set(self.columns) - set(known))
        if unknown:
            raise ValueError(f"columns {unknown} are not read by format {self.format} (it reads {', '.join(known)})")
        return self

    @model_validator(mode="after")
    def _packing_is_causal(self):
        if self.packing is True and self.format == "classification":
            raise ValueError("packing applies to causal LM formats, not classification")
        if self.packing is True and self.format in PREFERENCE_FORMATS:
            raise ValueError("preference answers are scored as whole sequences, one per row: set packing to false")
        if self.train_on_inputs and self.format in PREFERENCE_FORMATS:
            raise ValueError("preference objectives compare answers only: set train_on_inputs to false")
        return self

    @model_validator(mode="after")
    def _prompt_template_fits(self):
        t = self.prompt_template
        if t is None or t == "chat":
            return self
        if self.format == "alpaca" and t != "alpaca" and "{instruction}" not in t:
            raise ValueError("prompt_template for alpaca must be chat, alpaca, or contain {instruction}")
        if self.format in ("prompt_completion", *PREFERENCE_FORMATS) and t == "alpaca":
            raise ValueError("prompt_template alpaca applies to format alpaca; use chat or a string with {prompt}")
        if self.format in ("prompt_completion", *PREFERENCE_FORMATS) and "{prompt}" not in t:
            raise ValueError(f"prompt_template for {self.format} must be chat or contain {{prompt}}")
        if self.format not in ("alpaca", "prompt_completion", *PREFERENCE_FORMATS):
            raise ValueError(f"prompt_template applies to alpaca, prompt_completion and preference formats, "
                             f"not {self.format}")
        return self

    _paths_ok = field_validator("eval_path")(_no_nul)

    @field_validator("roles", "transcript_roles")
    @classmethod
    def _known_roles(cls, v):
        bad = sorted({r for r in (v or {}).values() if r not in ROLES})
        if bad:
            raise ValueError(f"roles map to system, user, assistant or tool (got {', '.join(bad)})")
        return v


def objective_format_problem(objective: str, fmt: str) -> str | None:
    """The one objective/format rule: preference objectives read preference rows, sft reads the others."""
    if objective == "sft":
        if fmt in PREFERENCE_FORMATS:
            return f"{fmt} rows need a preference objective: set train.objective to dpo, ipo, orpo, simpo or kto"
        return None
    if objective == "kto" and fmt in PREFERENCE_FORMATS:
        return None  # pairs split into a desirable and an undesirable answer
    if objective != "kto" and fmt == "preference":
        return None
    wanted = "preference or unpaired_preference" if objective == "kto" else "preference (prompt, chosen, rejected)"
    return f"objective {objective} reads data.format {wanted}, not {fmt}"


def task_format_problem(task: str, fmt: str) -> str | None:
    """The one task/format rule: classification data needs a classification head, the other formats a causal LM."""
    if (task == "sequence_classification") == (fmt == "classification"):
        return None
    if fmt == "classification":
        return f"does not fit model.task {task}; set model.task: sequence_classification"
    return f"does not fit model.task {task}; use data.format: classification, or model.task: causal_lm"
