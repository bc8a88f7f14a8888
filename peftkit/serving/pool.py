"""One base model in memory and the adapters of many runs over it (PEFT multi-adapter), each with the chat
template, system prompt and stop tokens its run was trained with.

The base is loaded exactly as training and `peftkit eval` load it (peftkit.modeling.load.load_base from the first
run's recipe, the tokenizer with the same pad token); every further run must have been trained on the same base
(same model, quantization and weight fingerprint) or it is refused with one line.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from ..data.bundle import RowProblem
from ..data.build import render_plan
from ..data.formats import RenderPlan
from ..data.pad import ensure_pad_token
from ..data.render import render_chat
from ..data.templates import stop_token_ids
from ..data.tokenize import encode_rendered
from ..errors import ModelError, PeftkitError
from ..modeling.fingerprint import check_same_base
from ..modeling.load import LoadedBase, load_base, load_tokenizer
from ..recipe import Recipe, load_recipe
from ..recipe.schema import ModelSpec
from ..rundir import RunInfo, read_run

BASE = "base"  # the model id of the base without any adapter
_PLACEHOLDER = {"role": "assistant", "content": "x"}  # a reply to render the prompt before it, as training did


class RequestProblem(PeftkitError):
    """A request this pool cannot answer as asked (a bad conversation, an unknown model): the caller's mistake."""


@dataclass(frozen=True)
class Served:
    """A model id the pool answers to: the base (adapter None) or one run's adapter."""

    name: str
    adapter: str | None  # the PEFT adapter name; None for the base
    run: Path | None
    plan: RenderPlan  # the run's chat template (or plain prompt template), as its data was rendered
    stop_ids: tuple[int, ...]
    system_prompt: str | None
    lora: bool  # PEFT can mix it with others in one batch (adapter_names=)


class ModelPool:
    """The base and its adapters. `lock` is held while the weights are used or changed: generation (peftkit.serving
    .batcher) and loading/unloading adapters never overlap."""

    def __init__(self, recipe: Recipe, base: LoadedBase, tokenizer, *, base_name: str = BASE) -> None:
        self.recipe = recipe
        self.base = base
        self.model = base.model
        self.tokenizer = tokenizer
        self.lock = threading.RLock()
        plan = render_plan(recipe.data, tokenizer)
        base_entry = Served(base_name, None, None, plan, stop_token_ids(tokenizer, plan.chat),
                            recipe.data.system_prompt, lora=True)
        self._served: dict[str, Served] = {base_name: base_entry}
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or None

    # ---- what is served

    def names(self) -> list[str]:
        return list(self._served)

    def has(self, name: str) -> bool:
        return name in self._served

    def get(self, name: str) -> Served:
        try:
            return self._served[name]
        except KeyError:
            raise RequestProblem(f"The model `{name}` does not exist; served: {', '.join(self._served)}") from None

    def can_mix(self, names: list[str]) -> bool:
        """Whether these models can share one generate call (LoRA adapters and the base, over a PeftModel)."""
        return hasattr(self.model, "peft_config") and all(self._served[n].lora for n in names if n in self._served)

    # ---- adapters

    def add_run(self, path: str | Path, name: str | None = None) -> Served:
        """Loads a run's adapter under `name` (default: the run folder's name). Refuses a run trained on another
        base, or a name already served."""
        run = read_run(path)
        name = name or run.path.resolve().name
        if name in self._served:
            raise RequestProblem(f"{name}: a model of that name is already served (give another name)")
        self._check_base(run)
        plan = render_plan(run.recipe.data, self.tokenizer, str(run.path / "recipe.yaml"))
        with self.lock:
            if hasattr(self.model, "peft_config"):
                self.model.load_adapter(str(run.adapter_dir), adapter_name=name)
            else:
                from peft import PeftModel

                self.model = PeftModel.from_pretrained(self.base.model, str(run.adapter_dir), adapter_name=name)
            self.model.eval()
            peft_type = self.model.peft_config[name].peft_type
            peft_type = str(getattr(peft_type, "value", peft_type))
        served = Served(name, name, run.path, plan, stop_token_ids(self.tokenizer, plan.chat),
                        run.recipe.data.system_prompt, lora=peft_type == "LORA")
        self._served = {**self._served, name: served}  # replaced, never mutated: readers need no lock
        return served

    def remove(self, name: str) -> None:
        served = self.get(name)
        if served.adapter is None:
            raise RequestProblem(f"{name} is the base model: it cannot be unloaded")
        with self.lock:  # no batch is running; one taken already finds the name gone and answers with an error
            self._served = {k: v for k, v in self._served.items() if k != name}
            try:
                if len(self._served) == 1:  # the last adapter: back to the plain base (PEFT keeps no empty wrapper)
                    self.model = self.model.unload()
                else:
                    self.model.delete_adapter(name)
            except Exception as exc:
                self._served = {**self._served, name: served}
                raise RequestProblem(f"{name}: PEFT could not unload it ({exc})") from None

    def _check_base(self, run: RunInfo) -> None:
        ours, theirs = self.recipe.model, run.recipe.model
        if (theirs.base, theirs.quantization, theirs.task) != (ours.base, ours.quantization, ours.task):
            raise ModelError(f"{run.path}: trained on {theirs.base} ({_bits(theirs)}), but this server's base is "
                             f"{ours.base} ({_bits(ours)}); serve it from its own base")
        check_same_base(run.meta.base.fingerprint, self.base.fingerprint, what=self.base.source.path_or_id,
                        where=str(run.path))

    # ---- prompts, as training rendered them

    def chat_prompt(self, served: Served, messages: list[dict]) -> list[int]:
        """Token ids of `messages` followed by the assistant's generation prompt: the conversation is rendered
        with a placeholder reply by the training renderer (peftkit.data.render) and tokenized segment by segment
        as training did, so the prompt is token for token what the model saw before each reply."""
        if served.plan.chat is None:
            raise RequestProblem(f"{served.name} was trained on plain prompts ({served.plan.name}), not a chat "
                                 "template; use /v1/completions")
        if not messages or messages[-1]["role"] == "assistant":
            raise RequestProblem("messages must end with a user (or tool) turn")
        if served.system_prompt and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": served.system_prompt}, *messages]
        try:
            rendered = render_chat([*messages, _PLACEHOLDER], self.tokenizer, served.plan.chat)
        except RowProblem as exc:
            raise RequestProblem(str(exc)) from None
        encoded = encode_rendered(rendered, self.tokenizer, max_length=1 << 30, train_on_inputs=False,
                                  with_prompt=True)
        return list(encoded.row["prompt_ids"])

    def text_prompt(self, served: Served, text: str) -> list[int]:
        """A raw completion prompt, with BOS where the tokenizer puts one in front of plain text (as training did)."""
        ids = self.tokenizer((served.plan.bos or "") + text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise RequestProblem("the prompt is empty")
        return list(ids)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def _bits(spec) -> str:
    return f"{spec.quantization.bits}-bit" if spec.quantization.bits else spec.dtype


def open_pool(targets: list[str], *, names: list[str | None] | None = None, device=None) -> ModelPool:
    """targets[0]: a run directory (its base and adapter) or a recipe file (its base only); the rest: runs on the
    same base. The base is loaded once, as the first target's recipe says."""
    if not targets:
        raise PeftkitError("give at least one run directory (or a recipe for the base alone)")
    first = Path(targets[0])
    merged = first.is_dir() and not (first / "recipe.yaml").is_file() and (first / "config.json").is_file()
    if merged:
        recipe = _merged_recipe(first)
    elif first.is_dir():
        recipe = read_run(first).recipe
    elif first.is_file():
        recipe = load_recipe(first)
    else:
        raise PeftkitError(f"{first}: neither a run directory, a merged model folder nor a recipe file")
    tokenizer = load_tokenizer(recipe.model)
    plan = render_plan(recipe.data, tokenizer)
    ensure_pad_token(tokenizer, stop_token_ids=stop_token_ids(tokenizer, plan.chat))  # as prepare_data does
    base = load_base(recipe.model, tokenizer=tokenizer, device=device)
    base.model.eval()
    pool = ModelPool(recipe, base, tokenizer, base_name=first.name if merged else BASE)
    names = names or [None] * len(targets)
    for target, name in zip(targets[1:] if merged else targets, names):
        if Path(target).is_dir():
            pool.add_run(target, name)
    return pool


def _merged_recipe(folder: Path) -> Recipe:
    """A merged model folder (`peftkit merge`: RUN/merged, or an export inside the run) served as the base, with
    its run's chat template and system prompt, loaded as `peftkit eval` loads it (not quantized)."""
    for run_dir in folder.resolve().parents:
        if (run_dir / "recipe.yaml").is_file() and (run_dir / "meta.json").is_file():
            recipe = read_run(run_dir).recipe
            spec = ModelSpec(base=str(folder.resolve()), task=recipe.model.task, dtype=recipe.model.dtype,
                             attn_implementation=recipe.model.attn_implementation)
            return recipe.model_copy(update={"model": spec})
    raise PeftkitError(f"{folder}: a model folder outside any run directory; give the run directory, or a recipe "
                       "whose model.base is this folder")
