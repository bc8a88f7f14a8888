"""The preference peer: TRL's own trainer for each objective, with a PEFT LoraConfig on the bitsandbytes base, on
exactly peftkit's token ids.

    dpo, ipo  trl.DPOTrainer                       loss_type sigmoid / ipo, beta
    orpo      trl.experimental.orpo.ORPOTrainer    beta (its lambda)
    simpo     trl.experimental.cpo.CPOTrainer      loss_type simpo, beta, simpo_gamma = gamma, label_smoothing,
                                                   cpo_alpha 0 (no behaviour-cloning term)
    kto       trl.KTOTrainer                       beta, desirable_weight, undesirable_weight

How the pairs reach TRL: pre-tokenized, never as text. Each pair is peftkit's prompt ids (chosen input_ids[:
prompt_len]) and each answer's trained span (record.answer_ids: through its end-of-turn; the template's newline
after it carries no loss). TRL's trainers accept that form in their collators, but their dataset preparation only
tokenizes text, so that one step is replaced: DPOTrainer / KTOTrainer `_prepare_dataset` returns the ids as given,
ORPOTrainer / CPOTrainer `tokenize_row` builds its prompt/chosen/rejected features from them (prompt masked with
IGNORE_INDEX). No BOS or EOS is added and nothing is re-tokenized. `check_received` then reads the trainer's prepared dataset
back and fails loudly unless it holds exactly those ids.

KTO: TRL samples in order (its KL estimate needs it), so it is given the answers in the order peftkit's sampler
draws them (pairs: chosen items, then rejected), each with peftkit's mismatched KL partner: the micro-batches are
the same answers as peftkit's while no epoch ends in a short batch.

Set to match the recipe, as in the SFT peer (trl_route.py): base and dtype, quantization, adapter shape and targets,
batch (pairs per micro-batch), accumulation, steps, lr, schedule, warm-up, weight decay, clipping, optimizer, seed,
max length, the objective's keys; the reference is TRL's PEFT default (adapter disabled), precomputed only when the
recipe precomputes. disable_dropout=False: TRL's default would zero the adapter's dropout, which peftkit keeps.
Everything else is TRL's default (gradient checkpointing, bf16 autocast, bf16 adapter weights on a 4-bit base, its
sampler). Known difference kept: TRL's ORPO adds the NLL of the chosen prompt AND answer, a token mean over the
micro-batch; peftkit's (the paper's) is the chosen answer's, averaged per pair.

Eval: peftkit's preference_metrics on TRL's trained model, the same function and held-out pairs as the peftkit route.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

from ..data import make_collator
from ..data.bundle import sequences
from ..data.collate import with_kl_partners
from ..data.prepare import prepare_data
from ..errors import PeftkitError
from ..evaluation.preference import preference_metrics
from ..hardware import peak_memory_mb
from ..modeling.load import keep_cpu_4bit_differentiable
from ..modeling.loss import supports_selective_logits
from ..modeling.objective import ModelReference
from ..modeling.tokens import IGNORE_INDEX, trained_tokens
from ..modeling.zoo import resolve_base
from ..recipe import Recipe
from ..recipe.schema.train import REFERENCE_OBJECTIVES
from ..training.batches import Batches
from .measure import process_age_s
from .peer import PEER_TRAINERS
from .record import (
    RouteRun,
    answer_ids,
    expected_reference,
    matched_preference,
    mean_sequence_tokens,
    preference_digest,
    preference_parts,
)
from .runner import mismatches
from .trl_route import StepClock, _Counted, load_model, lora_config, matched_arguments, measurement_arguments, read_back

DPO_LOSS = {"dpo": "sigmoid", "ipo": "ipo"}


class PairClock(StepClock):
    """StepClock for preference batches: tokens = non-pad tokens of both sequences (prompt and answer each),
    trained tokens = answer tokens (those carrying log-probabilities), as peftkit's fit counts them."""

    def count(self, inputs: dict) -> None:
        if "completion_mask" in inputs:  # DPO / KTO: one row per answer, completion_mask marks the answer
            self._tokens += int(inputs["attention_mask"].sum())
            self._trained += int(inputs["completion_mask"][:, 1:].sum())
        else:  # ORPO / CPO: chosen_* and rejected_* tensors, answers labelled
            for side in ("chosen", "rejected"):
                self._tokens += int(inputs[f"{side}_attention_mask"].sum())
                self._trained += trained_tokens(inputs[f"{side}_labels"])


class TokenizedDPOTrainer(_Counted, DPOTrainer):
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset  # already prompt_ids / chosen_ids / rejected_ids, the form TRL's tokenization produces


class TokenizedKTOTrainer(_Counted, KTOTrainer):
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset  # already prompt_ids / completion_ids / KL_completion_ids / label


def pair_features(feature: dict) -> dict:
    """ORPO/CPO's per-pair features from a pair's ids: each answer after the shared prompt, the prompt unlabelled."""
    prompt = list(feature["prompt_ids"])
    out = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for side in ("chosen", "rejected"):
        answer = list(feature[f"{side}_ids"])
        out[f"{side}_input_ids"] = prompt + answer
        out[f"{side}_attention_mask"] = [1] * (len(prompt) + len(answer))
        out[f"{side}_labels"] = [IGNORE_INDEX] * len(prompt) + answer
    return out


def _experimental(objective: str):
    """(config class, trainer class) of TRL's experimental ORPO / CPO, imported only when a recipe asks for them."""
    try:
        if objective == "orpo":
            from trl.experimental.orpo import ORPOConfig as Config
            from trl.experimental.orpo import ORPOTrainer as Base
        else:
            from trl.experimental.cpo import CPOConfig as Config
            from trl.experimental.cpo import CPOTrainer as Base
    except ImportError as exc:
        raise PeftkitError(f"bench --vs trl: train.objective {objective} needs {PEER_TRAINERS[objective]}, which "
                           f"this TRL does not have ({exc})") from None

    class Tokenized(_Counted, Base):
        def tokenize_row(self, feature, model=None):
            return pair_features(feature)

    return Config, Tokenized


def pair_rows(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        prompt, (chosen, rejected) = preference_parts(row)
        out.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return out


def _kl_answer(kl: dict, prompt_len: int) -> list[int]:
    # a long prompt can leave a KL sequence nothing trained after truncation: its log-prob is then 0 on both routes
    return answer_ids(kl, prompt_len) if any(x != IGNORE_INDEX for x in kl["labels"]) else []


def kto_items(rows: list[dict], recipe: Recipe) -> list[dict]:
    """KTO items in the order peftkit's sampler draws its micro-batches, each with peftkit's KL partner."""
    t = recipe.train
    rows = with_kl_partners(rows, recipe.data.max_length)
    sampler = Batches(len(rows), t.batch_size, t.seed)
    paired = "chosen" in rows[0]
    items = []
    for k in range(t.max_steps * t.grad_accum):
        batch = [rows[i] for i in sampler.batch(k)]
        for slot in range(len(sequences(batch[0]))):  # pairs: every chosen answer first (collate_items' order)
            for row in batch:
                prompt, answers = preference_parts(row)
                items.append({"prompt_ids": prompt, "completion_ids": answers[slot],
                              "KL_completion_ids": _kl_answer(row["kl"][slot], row["prompt_len"]),
                              "label": slot == 0 if paired else bool(row["desirable"])})
    return items


def objective_arguments(recipe: Recipe) -> dict:
    """The objective's keys in the TRL config's names."""
    t = recipe.train
    pref, objective = t.preference, t.objective
    beta = pref.beta_for(objective)
    if objective in DPO_LOSS:
        if pref.label_smoothing:
            raise PeftkitError("bench --vs trl: train.preference.label_smoothing: TRL's DPOTrainer (sigmoid loss) "
                               "has no conservative-DPO smoothing; set 0")
        return {"loss_type": [DPO_LOSS[objective]], "beta": beta, "precompute_ref_log_probs": t.precompute_ref is True}
    if objective == "orpo":
        return {"beta": beta}
    if objective == "simpo":
        return {"loss_type": "simpo", "beta": beta, "simpo_gamma": pref.gamma, "label_smoothing": pref.label_smoothing,
                "cpo_alpha": 0.0}
    if objective == "kto":
        return {"loss_type": "kto", "beta": beta, "desirable_weight": pref.desirable_weight,
                "undesirable_weight": pref.undesirable_weight, "precompute_ref_log_probs": t.precompute_ref is True}
    raise PeftkitError(f"bench --vs trl: train.objective {objective!r} is not a preference objective")


def _answers_per_row(rows: list[dict]) -> int:
    return len(sequences(rows[0]))


def objective_read_back(trainer, objective: str) -> dict:
    """The objective TRL's trainer actually runs, in peftkit's vocabulary (record.matched_preference)."""
    peft_ref = "precomputed" if getattr(trainer, "precompute_ref_logps", False) else (
        "adapter_off" if getattr(trainer, "ref_model", None) is None else "a second model")
    if isinstance(trainer, DPOTrainer):
        losses = list(trainer.loss_types)
        name = {"sigmoid": "dpo", "ipo": "ipo"}.get(losses[0], "+".join(losses)) if len(losses) == 1 else str(losses)
        out = {"objective": name, "beta": trainer.beta}
        if name == "dpo":
            out["label_smoothing"] = 0.0  # TRL's sigmoid loss applies none, whatever args.label_smoothing says
        return {**out, "reference": peft_ref}
    if isinstance(trainer, KTOTrainer):
        return {"objective": trainer.loss_type, "beta": trainer.beta, "desirable_weight": trainer.desirable_weight,
                "undesirable_weight": trainer.undesirable_weight, "reference": peft_ref}
    if objective == "orpo":
        return {"objective": "orpo", "beta": trainer.beta, "reference": "none"}
    simpo = trainer.loss_type == "simpo" and trainer.cpo_alpha == 0 and trainer.alpha == 0
    return {"objective": "simpo" if simpo else f"cpo/{trainer.loss_type} (cpo_alpha {trainer.cpo_alpha})",
            "beta": trainer.beta, "label_smoothing": trainer.label_smoothing, "gamma": trainer.simpo_gamma,
            "reference": "none"}


def check_received(trainer, fed: list[dict], objective: str) -> None:
    """Fail unless TRL's prepared training set holds exactly the ids it was given, column by column, in order."""
    expected = [pair_features(r) for r in fed] if objective in ("orpo", "simpo") else fed
    held = trainer.train_dataset
    if len(held) != len(expected):
        raise PeftkitError(f"bench: {PEER_TRAINERS[objective]} prepared {len(held)} training rows from the "
                           f"{len(expected)} it was given")
    for column in expected[0]:
        got = held[column]
        for i, row in enumerate(expected):
            if got[i] != row[column]:
                raise PeftkitError(f"bench: {PEER_TRAINERS[objective]} holds other token ids than peftkit's pairs "
                                   f"(column {column}, row {i}); TRL's data preparation changed them")


@dataclass
class Peer:
    """A TRL preference trainer set up on peftkit's pairs, before training."""

    trainer: object
    model: torch.nn.Module
    clock: PairClock
    fed: list[dict]              # the rows TRL was given (its column names)
    eval_examples: list[dict]    # peftkit's held-out rows, scored by preference_metrics on both routes
    tokenizer: object
    train_rows: int
    digest: str
    mean_tokens: float
    answers_per_row: int
    fixed_layers: int


def build_peer(recipe: Recipe, workdir: Path) -> Peer:
    """The TRL trainer for the recipe's objective on peftkit's own tokenized pairs, checked to hold exactly them."""
    workdir.mkdir(parents=True, exist_ok=True)
    t, objective = recipe.train, recipe.train.objective
    source = resolve_base(recipe.model.base)
    tokenizer, data = prepare_data(recipe)
    rows, per_row = data.train, _answers_per_row(data.train)
    fed = kto_items(rows, recipe) if objective == "kto" else pair_rows(rows)
    evals = with_kl_partners(data.eval, recipe.data.max_length) if objective == "kto" else data.eval
    evals = evals[: recipe.eval.max_examples] if recipe.eval.max_examples else evals
    digest, mean_tokens, n_rows = preference_digest(rows), mean_sequence_tokens(rows), len(rows)
    train_set = Dataset.from_list(fed)
    del data, rows  # a TRL user holds the dataset only, not peftkit's Python lists: do not charge them to its memory
    gc.collect()

    arguments = {**measurement_arguments(workdir), **matched_arguments(recipe), **objective_arguments(recipe),
                 "max_length": recipe.data.max_length, "disable_dropout": False}
    if objective == "kto":  # TRL's KTO batches answers: a micro-batch of B pairs is 2B of them
        arguments["per_device_train_batch_size"] = t.batch_size * per_row
    if objective in DPO_LOSS:
        config, trainer_cls = DPOConfig, TokenizedDPOTrainer
    elif objective == "kto":
        config, trainer_cls = KTOConfig, TokenizedKTOTrainer
    else:
        config, trainer_cls = _experimental(objective)
    model = load_model(recipe, source.path_or_id, None)
    clock = PairClock()
    trainer = trainer_cls(model=model, args=config(**arguments), train_dataset=train_set, processing_class=tokenizer,
                          peft_config=lora_config(recipe, model), callbacks=[clock])
    trainer.clock = clock
    wrong = mismatches(matched_preference(recipe, expected_reference(recipe)), objective_read_back(trainer, objective))
    if wrong:  # refused before any step: a peer on another objective would compare nothing
        raise PeftkitError(f"bench: {PEER_TRAINERS[objective]} is not set up as train.objective {objective} with the "
                           f"recipe's train.preference keys: {'; '.join(wrong)}")
    check_received(trainer, fed, objective)
    fixed = keep_cpu_4bit_differentiable(trainer.model)
    return Peer(trainer, model, clock, fed, evals, tokenizer, n_rows, digest, mean_tokens, per_row, fixed)


def evaluate_peer(peer: Peer, recipe: Recipe) -> dict[str, float]:
    """peftkit's preference metrics on TRL's trained model; the reference is the adapter switched off, as in the
    peftkit route (a precomputed table there equals it: the adapter started as the base)."""
    model, spec = peer.trainer.model, recipe.train
    device = next(model.parameters()).device
    reference = (ModelReference(model, selective=supports_selective_logits(model), adapter_off=True)
                 if spec.objective in REFERENCE_OBJECTIVES else None)
    collate = make_collator(peer.tokenizer, packing=False, objective=spec.objective)
    return preference_metrics(model, peer.eval_examples, collate, recipe.eval.batch_size or spec.batch_size, device,
                              spec, reference)


def _settings(peer: Peer, recipe: Recipe) -> dict:
    trainer, objective = peer.trainer, recipe.train.objective
    matched, defaults = read_back(trainer, peer.model)
    matched["train"]["batch_size"] //= peer.answers_per_row if objective == "kto" else 1  # back to pairs
    matched["preference"] = objective_read_back(trainer, objective)
    matched["data"] = {"max_length": trainer.args.max_length, "train_examples": peer.train_rows,
                       "eval_examples": len(peer.eval_examples), "examples_sha256": peer.digest}
    matched["trainable_params"] = matched.pop("trainable_params")
    fused = isinstance(trainer, (DPOTrainer, KTOTrainer))
    orpo = {"orpo_nll": "chosen prompt + answer tokens, token mean over the micro-batch"}
    extra = orpo if objective == "orpo" else {}
    return {"matched": matched, "defaults": {
        "trainer": PEER_TRAINERS[objective], **defaults, "packing": False, "padding_free": False,
        "vocabulary_projection": "answer positions only (TRL's fused LM head)" if fused else "every position",
        "data_feed": "peftkit's prompt and trained-answer ids (TRL's tokenization step replaced), checked on arrival",
        "data_order": "sequential, in peftkit's batch order" if objective == "kto" else "TRL's random sampler (seed)",
        "adapter_dropout": "the recipe's (disable_dropout=False)", **extra,
        "logging_steps": 1, "cpu_4bit_repack_disabled_layers": peer.fixed_layers,
    }}


def run_trl_preference(recipe: Recipe, workdir: Path) -> RouteRun:
    peer = build_peer(recipe, workdir)
    peer.trainer.train()
    metrics = evaluate_peer(peer, recipe)
    peak, kind = peak_memory_mb()
    wall = process_age_s()
    settings = _settings(peer, recipe)
    clock, steps = peer.clock, len(peer.clock.elapsed)
    return RouteRun(
        route="trl", settings=settings, step_elapsed_s=clock.elapsed, step_tokens=clock.tokens,
        step_trained_tokens=clock.trained, step_loss=[clock.loss.get(s) for s in range(1, steps + 1)],
        eval_loss=metrics["loss"], peak_memory_mb=peak, wall_s=wall, memory_kind=kind,
        trainable_params=settings["matched"]["trainable_params"], mean_example_tokens=peer.mean_tokens,
        eval_metrics=metrics,
    )
