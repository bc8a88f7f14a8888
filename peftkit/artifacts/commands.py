"""`peftkit merge` and `peftkit export`: a run directory in, a checked model folder or file out.

Both refuse before loading anything heavy when the run is incomplete, the base's weights are not the ones the
adapter was trained on (meta.json's fingerprint), or the output exists (unless `force`). Everything is written
into a hidden `.<out>.partial-*` folder beside the output and renamed into place only when complete and, for
merged weights, checked: an interrupted or failed export leaves no output behind.

Default outputs (all folders, so a re-export replaces one thing atomically):
  merge / export --format merged   RUN_DIR/merged/               HF model folder + merge_check.json
  export --format adapter          RUN_DIR/export/adapter/       PEFT adapter + tokenizer + README.md
  export --format gguf             RUN_DIR/export/gguf-<type>/   <name>-<type>.gguf + Modelfile + merge_check.json
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rich.console import Console

from ..errors import ModelError, PeftkitError, RunDirError
from ..recipe.schema.adapter import PROMPT_LEARNING
from ..rundir import RunInfo, read_run, staged
from .check import (
    DEFAULT_PROMPTS,
    MergeCheck,
    MergeCheckFailed,
    check_rows,
    compare,
    reference_logprobs,
    tolerance_for,
)

ExportFormat = Literal["adapter", "merged", "gguf"]
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class MergeResult:
    out_dir: Path
    dtype: str
    check: MergeCheck | None  # None with check=False
    seconds: float


@dataclass(frozen=True)
class ExportResult:
    format: ExportFormat
    out: Path  # the folder written
    files: tuple[str, ...]  # names inside it
    check: MergeCheck | None
    seconds: float
    notes: tuple[str, ...] = ()


def merge(
    run_dir: str | Path, *, out: str | Path | None = None, dtype: str | None = None, force: bool = False,
    check: bool = True, prompts: int = DEFAULT_PROMPTS, console: Console | None = None,
) -> MergeResult:
    """Merge the run's adapter into its dequantized base and save an HF folder; `dtype`: bf16 | fp16 | fp32
    (default: the dtype the run loaded its base in). Raises MergeCheckFailed (nothing written) when the
    merged model does not reproduce the trained one."""
    from .merge import default_out_dtype

    t0 = time.perf_counter()
    console = console or Console(stderr=True)
    run = _open_run(run_dir, merged=True)
    dtype = _known_dtype(dtype or default_out_dtype(run.recipe.model))
    target = _target(run, out, "merged")
    _check_base(run)
    with staged(target, force=force) as tmp:
        report = _merge_into(run, tmp, dtype=dtype, check=check, prompts=prompts, console=console)
    return MergeResult(out_dir=target, dtype=dtype, check=report, seconds=time.perf_counter() - t0)


def export(
    run_dir: str | Path, *, format: ExportFormat, out: str | Path | None = None, gguf_type: str = "f16",
    dtype: str | None = None, force: bool = False, check: bool = True, modelfile: bool = True,
    console: Console | None = None,
) -> ExportResult:
    """Export the run as a clean adapter folder, a merged HF folder, or a GGUF file plus Ollama Modelfile."""
    t0 = time.perf_counter()
    console = console or Console(stderr=True)
    if format == "merged":
        r = merge(run_dir, out=out, dtype=dtype, force=force, check=check, console=console)
        return ExportResult("merged", r.out_dir, _names(r.out_dir), r.check, time.perf_counter() - t0)
    if format not in ("adapter", "gguf"):
        raise PeftkitError(f"--format: expected adapter, merged or gguf (got {format!r})")
    if format == "gguf" and gguf_type not in ("f16", "q8_0"):
        raise PeftkitError(f"--gguf-type: expected f16 or q8_0 (got {gguf_type!r})")
    dtype = _known_dtype(dtype or "fp32")
    run = _open_run(run_dir, merged=format == "gguf")
    target = _target(run, out, "export/adapter" if format == "adapter" else f"export/gguf-{gguf_type}")
    _check_base(run)
    notes: list[str] = []
    report = None
    with staged(target, force=force) as tmp:
        if format == "adapter":
            _write_adapter(run, tmp)
        else:
            report = _write_gguf(run, tmp, gguf_type=gguf_type, dtype=dtype, check=check,
                                 modelfile=modelfile, notes=notes, console=console)
    return ExportResult(format, target, _names(target), report, time.perf_counter() - t0, tuple(notes))


# ---- preflight


def _known_dtype(dtype: str) -> str:
    from .merge import OUT_DTYPES

    if dtype not in OUT_DTYPES:
        raise PeftkitError(f"--dtype: expected one of {', '.join(OUT_DTYPES)} (got {dtype!r})")
    return dtype


def _target(run: RunInfo, out: str | Path | None, default: str) -> Path:
    """`out`, or `default` inside the run; never a folder holding the run or its adapter (--force would delete it)."""
    target = Path(out) if out else run.path / default
    resolved, run_dir = target.resolve(), run.path.resolve()
    if resolved == run_dir or run_dir.is_relative_to(resolved) or resolved.is_relative_to(run_dir / "adapter"):
        raise RunDirError(f"{target}: would replace the run directory or its adapter; choose another --out")
    return target


def _open_run(run_dir: str | Path, *, merged: bool) -> RunInfo:
    run = read_run(run_dir)
    if not any((run.adapter_dir / f).is_file() for f in ADAPTER_WEIGHTS):
        raise RunDirError(f"{run.adapter_dir}: no adapter weights ({' or '.join(ADAPTER_WEIGHTS)}); did training finish?")
    method = run.recipe.adapter.method
    if merged and method in PROMPT_LEARNING:
        raise ModelError(f"{run.path}: adapter.method {method} learns virtual tokens, not weight changes, so there is "
                         "nothing to merge (export --format adapter works for it)")
    if merged and run.recipe.model.task != "causal_lm":
        raise ModelError(f"{run.path}: merging supports causal_lm runs, this one is {run.recipe.model.task} "
                         "(export --format adapter works for it)")
    return run


def _check_base(run: RunInfo) -> str:
    """The base folder found now, after checking it holds the weights the adapter was trained on."""
    from ..modeling.fingerprint import check_same_base, fingerprint_folder
    from ..modeling.zoo import resolve_base

    spec = run.recipe.model
    source = resolve_base(spec.base)
    found = fingerprint_folder(Path(source.path_or_id)) if source.kind != "hub" else None
    check_same_base(run.meta.base.fingerprint, found, what=source.path_or_id, where=str(run.path))
    return source.path_or_id


# ---- the work


def _run_tokenizer(run: RunInfo):
    """The tokenizer training saved with the adapter (its pad token set), else the base's."""
    from transformers import AutoTokenizer

    from ..modeling.load import load_tokenizer

    if (run.adapter_dir / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(run.adapter_dir))
    return load_tokenizer(run.recipe.model)


def _trained_chat_template(run: RunInfo, tokenizer) -> str | None:
    """The chat template the run's data was rendered with (meta.json data.template): a named one replaces the
    tokenizer's, so the exported model is prompted the way it was trained."""
    from ..data.templates import NAMED_TEMPLATES

    name = run.meta.data.get("template")
    if name in NAMED_TEMPLATES:
        return NAMED_TEMPLATES[name]
    template = getattr(tokenizer, "chat_template", None)
    return template if isinstance(template, str) else None


def _merge_into(run: RunInfo, folder: Path, *, dtype: str, check: bool, prompts: int,
                console: Console) -> MergeCheck | None:
    import gc

    from ..data.prepare import prepare_data
    from .merge import load_merged, load_trained, merge_unquantized, save_merged

    spec = run.recipe.model
    # the examples training held out, prepared as training prepared them (the run's recipe has absolute paths)
    tokenizer, data = prepare_data(run.recipe, tokenizer=_run_tokenizer(run))
    console.print(f"loading {spec.base} as trained ({_as_trained(spec)}) + adapter", highlight=False)
    trained, base = load_trained(spec, run.adapter_dir)
    base_path = base.source.path_or_id
    del base
    rows = check_rows(data.eval, prompts) if check else []
    reference = reference_logprobs(trained, rows) if check else []
    console.print(f"merging into the {'dequantized ' if spec.quantization.bits else ''}base in fp32, saving {dtype}",
                  highlight=False)
    merged = merge_unquantized(trained, spec, base_path, run.adapter_dir)
    del trained
    save_merged(merged, tokenizer, folder, dtype=dtype, base_path=base_path, stop_token_ids=data.stop_token_ids,
                chat_template=_trained_chat_template(run, tokenizer))
    del merged
    gc.collect()
    if not check:
        console.print("merge check skipped (--no-check)", highlight=False)
        return None
    tolerance = tolerance_for(spec.quantization.bits, dtype, spec.dtype)
    report = compare(load_merged(folder, spec, dtype), rows, reference, tolerance, dtype=dtype,
                     bits=spec.quantization.bits)
    report.write(folder / "merge_check.json")
    console.print(report.summary(), highlight=False)
    if not report.passed:
        raise MergeCheckFailed(report, str(run.path))
    return report


def _as_trained(spec) -> str:
    q = spec.quantization
    return f"{q.bits}-bit" if q.bits else spec.dtype


def _write_adapter(run: RunInfo, folder: Path) -> None:
    from .card import adapter_card

    for name in ("adapter_config.json", *ADAPTER_WEIGHTS):
        if (run.adapter_dir / name).is_file():
            shutil.copy2(run.adapter_dir / name, folder / name)
    tokenizer = _run_tokenizer(run)
    template = _trained_chat_template(run, tokenizer)
    if template:
        tokenizer.chat_template = template
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(adapter_card(run), encoding="utf-8")


def _write_gguf(run: RunInfo, folder: Path, *, gguf_type: str, dtype: str, check: bool, modelfile: bool,
                notes: list[str], console: Console) -> MergeCheck | None:
    """Merged weights go to a scratch folder inside the staging folder (fp32 by default, so the GGUF type is
    the only rounding), become one GGUF file, and are deleted."""
    from .gguf import write_gguf
    from .modelfile import write_modelfile

    scratch = folder / ".merged"
    report = _merge_into(run, scratch, dtype=dtype, check=check, prompts=DEFAULT_PROMPTS, console=console)
    name = f"{run.recipe.name}-{gguf_type}.gguf"
    console.print(f"writing {name}", highlight=False)
    written = write_gguf(scratch, folder / name, gguf_type=gguf_type, name=run.recipe.name)
    if report is not None:
        report.write(folder / "merge_check.json")
    if modelfile and written.chat_template:
        from transformers import AutoTokenizer

        stops = _stop_tokens(scratch, AutoTokenizer.from_pretrained(str(scratch)))
        write_modelfile(folder, name, chat_template=written.chat_template, stop_tokens=stops)
    elif modelfile:
        notes.append("no Modelfile: the run used no chat template, so Ollama would need a TEMPLATE written by hand")
    shutil.rmtree(scratch)
    return report


def _stop_tokens(merged_dir: Path, tokenizer) -> list[str]:
    """The generation config's EOS ids (every token that ended a trained turn) as token strings."""
    from transformers import GenerationConfig

    eos = GenerationConfig.from_pretrained(str(merged_dir)).eos_token_id
    ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    return [t for t in tokenizer.convert_ids_to_tokens([int(i) for i in ids]) if t]


def _names(folder: Path) -> tuple[str, ...]:
    return tuple(sorted(p.name for p in folder.iterdir())) if folder.is_dir() else ()
