"""`build_data`: the recipe's data section + a tokenizer -> tokenized train/eval examples and a report.

Order: read rows (each source from its local copy, or from the hub dataset behind it when that is absent) -> split
off eval (separate file, or a seeded fraction) -> shuffle train (seeded) -> render, mask and tokenize until
data.limit examples are kept -> report what was read, truncated, dropped and skipped.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, Problem, RecipeError
from ..modeling.tokens import trained_tokens
from ..recipe.schema.data import PREFERENCE_FORMATS, DataSpec, task_format_problem
from .bundle import DataBundle, DataReport, RowProblem, SourceRead, SplitReport, sequences
from .formats import RenderPlan, col, render_row, row_problem
from .hub import HubLoader, choose_sources, read_hub
from .pairs import preference_parts, render_answer
from .sources import Loaded, Record, load_source
from .templates import TemplateProblem, has_chat_template, resolve_chat_format, stop_token_ids
from .tokenize import bos_text, chunk_documents, encode_classification, encode_preference, encode_rendered

CLASSIFICATION_TASKS = ("classification", "sequence_classification")


@dataclass
class _Tally:
    examples: int = 0
    tokens: int = 0
    trained: int = 0
    truncated: int = 0
    dropped: int = 0
    skipped: int = 0

    def add(self, row: dict, truncated: bool) -> None:
        self.examples += 1
        for seq in sequences(row):
            self.tokens += len(seq["input_ids"])
            self.trained += trained_tokens(seq["labels"])
        self.truncated += int(truncated)

    def freeze(self) -> SplitReport:
        return SplitReport(self.examples, self.tokens, self.trained, self.truncated, self.dropped, self.skipped)


@dataclass
class _Rows:
    """Rows of one split before tokenization, with the bad rows already skipped while reading."""

    records: list[Record] = field(default_factory=list)
    skipped: int = 0


def build_data(spec: DataSpec, tokenizer, *, seed: int, task: str = "causal_lm", source_file: str | None = None,
               base_dir: Path | None = None, hub_loader: HubLoader | None = None) -> DataBundle:
    """Callers outside this package use prepare_data. `base_dir`: folder still-relative data paths resolve against
    (default: the working directory; a recipe loaded from a file has them absolute already). `seed` is used unless
    data.seed is set. Bad rows raise DataError(file, why, row) unless data.on_bad_row is skip. `hub_loader`: what
    reads a hub split when a local copy is absent (default datasets.load_dataset)."""
    _check_task(spec, task, source_file)
    seed = spec.seed if spec.seed is not None else seed
    reasons: list[str] = []
    train, evals, sources = _split_rows(spec, Path(base_dir or Path.cwd()), seed, reasons, hub_loader)
    if spec.format == "classification":
        bundle = _classification(spec, tokenizer, train, evals, sources, reasons)
    elif spec.format == "completion":
        bundle = _completion(spec, tokenizer, train, evals, sources, reasons, seed)
    elif spec.format in PREFERENCE_FORMATS:
        plan = render_plan(spec, tokenizer, source_file)
        t_train, rows_train = _preference(spec, tokenizer, plan, train, reasons, with_prompt=False, limit=spec.limit)
        t_eval, rows_eval = _preference(spec, tokenizer, plan, evals, reasons, with_prompt=True, limit=None)
        report = DataReport(t_train.freeze(), t_eval.freeze(), spec.format, plan.name, None, tuple(reasons),
                            *_named(sources))
        bundle = DataBundle(rows_train, rows_eval, report, None, stop_token_ids(tokenizer, plan.chat))
    else:
        plan = render_plan(spec, tokenizer, source_file)
        t_train, rows_train = _generative(spec, tokenizer, plan, train, reasons, with_prompt=False, limit=spec.limit)
        t_eval, rows_eval = _generative(spec, tokenizer, plan, evals, reasons, with_prompt=True, limit=None)
        report = DataReport(t_train.freeze(), t_eval.freeze(), spec.format, plan.name, None, tuple(reasons),
                            *_named(sources))
        bundle = DataBundle(rows_train, rows_eval, report, None, stop_token_ids(tokenizer, plan.chat))
    _check_usable(spec, bundle)
    return bundle


def _check_usable(spec: DataSpec, bundle: DataBundle) -> None:
    """With on_bad_row: skip every row may be skipped; say so here rather than fail later on an empty loader."""
    if bundle.train:
        return
    train, held = bundle.report.train, bundle.report.eval
    counts = [(train.skipped + held.skipped, "skipped as bad"),
              (train.dropped, "dropped: nothing trained left after truncation to data.max_length")]
    why = ", ".join(f"{n} {what}" for n, what in counts if n)
    raise DataError(spec.path or bundle.report.sources[0], "no usable rows for training" + (f" ({why})" if why else ""))


def _check_task(spec: DataSpec, task: str, source_file: str | None) -> None:
    problem = task_format_problem("sequence_classification" if task in CLASSIFICATION_TASKS else task, spec.format)
    if problem:  # a Recipe already refused this; a DataSpec built in code meets the same rule
        raise RecipeError(source_file, [Problem("data.format", problem, spec.format, True)])


def render_plan(spec: DataSpec, tokenizer, source_file: str | None = None) -> RenderPlan:
    """How this data spec's prompts are rendered (chat template or plain text template); serving renders
    requests with the same plan the run was trained with."""
    template = spec.prompt_template
    if spec.format in ("alpaca", *PREFERENCE_FORMATS) and template is None:
        chat = spec.chat_template != "auto" or has_chat_template(tokenizer)
        template = "chat" if chat else ("alpaca" if spec.format == "alpaca" else None)  # preference: raw prompt
    use_chat = spec.format == "chat" or template == "chat"
    try:
        chat = resolve_chat_format(tokenizer, spec.chat_template) if use_chat else None
    except TemplateProblem as e:
        raise RecipeError(source_file, [Problem("data.chat_template", str(e), spec.chat_template, True)]) from None
    return RenderPlan(chat, None if use_chat else template, bos_text(tokenizer))


# ---- reading and splitting


def _split_rows(spec: DataSpec, base_dir: Path, seed: int, reasons: list[str],
                hub_loader: HubLoader | None) -> tuple[_Rows, _Rows, tuple[SourceRead, ...]]:
    rng = random.Random(seed)
    skip_bad = spec.on_bad_row == "skip"
    whole_text = spec.format == "completion"
    main, *rest = sources = choose_sources(spec, base_dir)
    held = rest.pop(0) if rest and rest[0].key == "data.eval_path" else None
    builtin = main.read == "builtin"
    if builtin:
        train, evals = _builtin(spec, seed)
    else:
        loaded = _load(main, base_dir, skip_bad, whole_text, reasons, hub_loader)
        train, evals = _Rows(list(loaded.records), loaded.skipped), _Rows()
    if held is not None:
        extra = _load(held, base_dir, skip_bad, whole_text, reasons, hub_loader)
        evals = _Rows(list(extra.records), extra.skipped)
    elif not builtin and spec.format != "completion":  # completion holds out its tail windows (_completion)
        rng.shuffle(train.records)
        n_eval = _eval_count(len(train.records), spec.eval_fraction)
        evals, train.records = _Rows(train.records[:n_eval]), train.records[n_eval:]
    for source, read in zip(spec.mix, rest):
        more = _load(read, base_dir, skip_bad, whole_text, reasons, hub_loader)
        records = list(more.records)
        rng.shuffle(records)
        train.records += records[: source.limit] if source.limit else records
        train.skipped += more.skipped
    if spec.format != "completion":
        rng.shuffle(train.records)
    return train, evals, sources


def _named(sources: tuple[SourceRead, ...]) -> tuple[tuple[str, ...], tuple[SourceRead, ...]]:
    """DataReport's sources (what was read: a path, a hub label or builtin:NAME) and read (the detail)."""
    return tuple(s.hub_label() if s.read == "hub" else str(s.local) for s in sources), sources


def _eval_count(n: int, fraction: float) -> int:
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * fraction)))


def _load(source: SourceRead, base_dir: Path, skip_bad: bool, whole_text: bool, reasons: list[str],
          hub_loader: HubLoader | None) -> Loaded:
    if source.read == "hub":
        return read_hub(source, hub_loader)
    loaded = load_source(str(source.local), base_dir, skip_bad=skip_bad, whole_text=whole_text)
    reasons += loaded.reasons[: max(0, 5 - len(reasons))]
    return loaded


def _builtin(spec: DataSpec, seed: int) -> tuple[_Rows, _Rows]:
    from .builtin import BUILTINS, load_builtin

    name = spec.path.removeprefix("builtin:")
    try:
        data = load_builtin(name, seed)
    except KeyError:
        raise DataError(spec.path, f"unknown builtin dataset; known: {', '.join(sorted(BUILTINS))}") from None
    if data.format != spec.format:
        raise DataError(spec.path, f"is a {data.format} dataset; set data.format: {data.format}")
    file = f"builtin:{name}"
    return (_Rows([Record(r, file, i) for i, r in enumerate(data.train, 1)]),
            _Rows([Record(r, file, i) for i, r in enumerate(data.eval, 1)]))


def _problem(spec: DataSpec, rec: Record, why: str, tally: _Tally, reasons: list[str]) -> None:
    if spec.on_bad_row == "error":
        raise DataError(rec.file, why, row=rec.row)
    tally.skipped += 1
    if len(reasons) < 5:
        reasons.append(f"{rec.file}, row {rec.row}: {why}")


# ---- per format


def _generative(spec, tokenizer, plan, rows: _Rows, reasons, *, with_prompt: bool, limit: int | None):
    tally, out = _Tally(skipped=rows.skipped), []
    for rec in rows.records:
        if limit is not None and len(out) >= limit:
            break
        why = row_problem(rec.data, spec)
        if why is None:
            try:
                rendered = render_row(rec.data, spec, plan, tokenizer)
            except RowProblem as e:  # what depends on the template: an input with no {input}, a chat it refuses
                why = str(e)
        if why is not None:
            _problem(spec, rec, why, tally, reasons)
            continue
        enc = encode_rendered(rendered, tokenizer, max_length=spec.max_length,
                              train_on_inputs=spec.train_on_inputs, with_prompt=with_prompt)
        if enc.row is None:
            tally.dropped += 1
            continue
        tally.add(enc.row, enc.truncated)
        out.append(enc.row)
    return tally, out


def _preference(spec, tokenizer, plan, rows: _Rows, reasons, *, with_prompt: bool, limit: int | None):
    tally, out = _Tally(skipped=rows.skipped), []
    for rec in rows.records:
        if limit is not None and len(out) >= limit:
            break
        try:
            parts = preference_parts(rec.data, spec)
            rendered = [render_answer(parts.prompt, a, plan, tokenizer) for a in parts.answers]
            enc = encode_preference(rendered, parts.desirable, tokenizer, max_length=spec.max_length,
                                    with_prompt=with_prompt)
        except RowProblem as e:
            _problem(spec, rec, str(e), tally, reasons)
            continue
        if enc.row is None:
            tally.dropped += 1
            continue
        tally.add(enc.row, enc.truncated)
        out.append({**enc.row, "index": len(out)})  # numbers the split's answers (collate_pairs)
    return tally, out


def _completion(spec, tokenizer, train: _Rows, evals: _Rows, sources, reasons, seed: int) -> DataBundle:
    def texts(rows: _Rows, tally: _Tally) -> list[str]:
        out = []
        for rec in rows.records:
            why = row_problem(rec.data, spec)
            if why is None:
                out.append(rec.data[col(spec, "text")])
            else:
                _problem(spec, rec, why, tally, reasons)
        return out

    t_train, t_eval = _Tally(skipped=train.skipped), _Tally(skipped=evals.skipped)
    windows = chunk_documents(texts(train, t_train), tokenizer, max_length=spec.max_length)
    if evals.records:
        eval_rows = chunk_documents(texts(evals, t_eval), tokenizer, max_length=spec.max_length)
    else:  # hold out the contiguous tail, so no eval window shares text with a train window
        n_eval = _eval_count(len(windows), spec.eval_fraction)
        windows, eval_rows = windows[: len(windows) - n_eval], windows[len(windows) - n_eval:]
    random.Random(seed).shuffle(windows)
    train_rows = windows[: spec.limit] if spec.limit else windows
    for r in train_rows:
        t_train.add(r, False)
    for r in eval_rows:
        t_eval.add(r, False)
    report = DataReport(t_train.freeze(), t_eval.freeze(), "completion", None, None, tuple(reasons), *_named(sources))
    return DataBundle(train_rows, eval_rows, report, None, stop_token_ids(tokenizer, None))


def _classification(spec, tokenizer, train: _Rows, evals: _Rows, sources, reasons) -> DataBundle:
    label_key = col(spec, "label")
    names = spec.label_names or _label_names([r.data.get(label_key) for r in train.records + evals.records])
    index = {name: i for i, name in enumerate(names)}

    def encode(rows: _Rows, limit: int | None) -> tuple[_Tally, list[dict]]:
        tally, out = _Tally(skipped=rows.skipped), []
        for rec in rows.records:
            if limit is not None and len(out) >= limit:
                break
            why = row_problem(rec.data, spec)
            label = None if why else _label_id(rec.data[label_key], index, names)
            if why is None and label is None:
                why = f"label {rec.data[label_key]!r} is not one of {', '.join(names)}"
            if why is not None:
                _problem(spec, rec, why, tally, reasons)
                continue
            text, pair = rec.data[col(spec, "text")], rec.data.get(col(spec, "text_pair"))
            enc = encode_classification(text, pair, label, tokenizer, max_length=spec.max_length)
            tally.add(enc.row, enc.truncated)
            out.append(enc.row)
        return tally, out

    t_train, rows_train = encode(train, spec.limit)
    t_eval, rows_eval = encode(evals, None)
    counts = Counter(r["labels"] for r in rows_train)
    report = DataReport(t_train.freeze(), t_eval.freeze(), "classification", None,
                        tuple((n, counts.get(i, 0)) for i, n in enumerate(names)), tuple(reasons), *_named(sources))
    return DataBundle(rows_train, rows_eval, report, tuple(names), ())


# What int() takes as a label id; str.isdigit() also takes '²', which int() refuses.
_INTEGER = re.compile(r"-?\d+")


def _label_names(values: list) -> tuple[str, ...]:
    seen = {str(v).strip() for v in values if v is not None and str(v).strip() != ""}
    if all(_INTEGER.fullmatch(s) for s in seen):
        return tuple(sorted(seen, key=int))
    return tuple(sorted(seen))


def _label_id(value: int | str, index: dict[str, int], names: tuple[str, ...]) -> int | None:
    """The class id of a label row_problem accepted; None when it names no class."""
    text = str(value).strip()
    if text in index:
        return index[text]
    if _INTEGER.fullmatch(text) and 0 <= int(text) < len(names):
        return int(text)  # integer ids with data.label_names given as their names
    return None
