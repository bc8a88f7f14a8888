"""Device-correct by construction, proven without a GPU: an accelerator whose device is `meta` and a model that
records where its inputs live see every training and eval tensor there; an fp16 loss scaler that overflows
skips steps (lowering its scale, leaving the scheduler alone) instead of aborting the run."""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from torch.utils.data import DataLoader

from peftkit.adapters import attach_adapter
from peftkit.evaluation.measure import measure
from peftkit.recipe.schema import AdapterSpec, EvalSpec, TrainSpec
from peftkit.training.batches import Batches
from peftkit.training.loop import FitState, fit
from peftkit.training.optim import build_optimizer, build_scheduler

from .test_loop import collate, examples, tiny_llama

META = torch.device("meta")


class FakeAccelerator:
    """What fit() asks of Accelerate, on one process: the device batches must reach, backward (through an fp16
    loss scaler when given one, as Accelerate does on CUDA), unscale-then-clip, no DDP."""

    def __init__(self, device=torch.device("cpu"), scaler=None):
        self.device, self.scaler, self.num_processes = device, scaler, 1
        self._optimizer = None

    def prepare_optimizer(self, optimizer):
        Accelerator(cpu=True)  # AcceleratedOptimizer reads the (process-wide) Accelerate state
        self._optimizer = AcceleratedOptimizer(optimizer, device_placement=False, scaler=self.scaler)
        return self._optimizer

    def unwrap_model(self, model):
        return model

    def no_sync(self, model):
        return nullcontext()

    def backward(self, loss):
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def clip_grad_norm_(self, params, max_norm):
        if self.scaler is not None:
            self.scaler.unscale_(self._optimizer.optimizer)
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


class Recorder(torch.nn.Module):
    """Records the device of every tensor it is given; answers with a loss / logits / tokens on the CPU."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))
        self.seen: list[tuple[str, torch.device]] = []

    def _record(self, call: str, kwargs: dict) -> None:
        self.seen += [(f"{call}.{k}", v.device) for k, v in kwargs.items() if isinstance(v, torch.Tensor)]

    def forward(self, **kwargs):
        self._record("forward", kwargs)
        rows = kwargs["input_ids"].shape[0]
        return SimpleNamespace(loss=(self.w ** 2).sum(), logits=torch.zeros(rows, 2))

    def generate(self, **kwargs):
        self._record("generate", kwargs)
        rows, width = kwargs["input_ids"].shape
        return torch.full((rows, width + 2), 5, dtype=torch.long)


class Tokenizer:
    pad_token_id = 0

    def decode(self, ids, skip_special_tokens=False):
        return " ".join(map(str, ids))


def test_every_training_and_eval_tensor_reaches_the_accelerators_device():
    model, rows = Recorder(), examples(8)
    accelerator = FakeAccelerator(META)
    spec = TrainSpec(max_steps=3, batch_size=4, grad_accum=2, lr=1e-2)
    optimizer = accelerator.prepare_optimizer(build_optimizer([model.w], spec))
    batches = iter(DataLoader(rows, batch_sampler=Batches(len(rows), 4, 0), collate_fn=collate))
    state = fit(model, optimizer, build_scheduler(optimizer, spec), batches, accelerator, spec, FitState())
    assert state.step == 3
    trained = [name for name, _ in model.seen]
    assert len(trained) == 3 * 2 * 3  # steps x micro-batches x (input_ids, attention_mask, labels)
    held_out = [{**r, "prompt_ids": r["input_ids"][:4], "reference": "x"} for r in rows]
    measure(model, Tokenizer(), held_out, EvalSpec(metrics=("loss", "exact_match"), max_new_tokens=2),
            collate=collate, batch_size=4, device=META)
    calls = {name.split(".")[0] for name, _ in model.seen}
    assert calls == {"forward", "generate"}
    off = [(name, d) for name, d in model.seen if d != META]
    assert not off, off


def test_fp16_overflow_is_skipped_not_fatal_and_the_scale_drops():
    """A scaler started at 2**40 overflows the fp16 base's backward until its scale is small enough; those steps
    are skipped (no weight or schedule change) and 3 real steps still happen."""
    model = attach_adapter(tiny_llama(torch.float16), AdapterSpec(rank=4, dropout=0.0), task="causal_lm")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    accelerator = FakeAccelerator(scaler=scaler)
    spec = TrainSpec(max_steps=3, batch_size=4, lr=1e-2, schedule="linear", selective_logits=False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = accelerator.prepare_optimizer(build_optimizer(params, spec))
    scheduler = build_scheduler(optimizer, spec)
    rows = examples()
    batches = iter(DataLoader(rows, batch_sampler=Batches(len(rows), 4, 0), collate_fn=collate))
    state = fit(model, optimizer, scheduler, batches, accelerator, spec, FitState())
    assert state.step == 3 and state.overflows > 0 and state.skipped == 0
    assert scaler.get_scale() < 2.0**40
    assert scheduler.last_epoch == 3  # advanced on the 3 real steps only
    assert state.micro_batches == 3 + state.overflows  # the overflowed batches were consumed, not retried
    assert all(torch.isfinite(p).all() for p in params)


def test_sharded_engines_are_refused_naming_ddp():
    from accelerate.utils import DistributedType

    from peftkit.errors import PeftkitError
    from peftkit.training.trainer import _refuse_sharded

    for kind in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        with pytest.raises(PeftkitError, match=f"{kind.value} is not supported.*DDP"):
            _refuse_sharded(SimpleNamespace(distributed_type=kind))
    for kind in (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU):
        _refuse_sharded(SimpleNamespace(distributed_type=kind))
