"""Every adapter method on a tiny fp32 Llama, through the real training loop: the loss falls, only that method's
parameters move, the base stays bit-identical, and the saved adapter reloads with identical logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel

from peftkit.adapters import attach_adapter, param_report
from peftkit.recipe.schema import AdapterSpec
from peftkit.recipe.schema.adapter import READ_BY
from peftkit.modeling.loss import causal_lm_loss, supports_selective_logits

# id -> (adapter options, the name fragment every trainable parameter of that method carries)
CASES = {
    "lora": ({"method": "lora"}, "lora_"),
    "dora": ({"method": "dora"}, "lora_"),  # lora_A / lora_B / lora_magnitude_vector
    "rslora": ({"method": "rslora"}, "lora_"),
    "lora-gaussian": ({"method": "lora", "init": "gaussian"}, "lora_"),
    "lora-pissa": ({"method": "lora", "init": "pissa"}, "lora_"),
    "lora-olora": ({"method": "lora", "init": "olora"}, "lora_"),
    "lora-plus": ({"method": "lora", "lora_plus_ratio": 4.0}, "lora_"),
    "loha": ({"method": "loha"}, "hada_"),
    "lokr": ({"method": "lokr"}, "lokr_"),
    "vera": ({"method": "vera", "rank": 32}, "vera_lambda_"),
    "adalora": ({"method": "adalora", "rank": 2}, "lora_"),  # lora_A / lora_B / lora_E
    "ia3": ({"method": "ia3"}, "ia3_l"),
    "oft": ({"method": "oft", "block_size": 16}, "oft_"),
    "boft": ({"method": "boft", "block_size": 16}, "boft_"),  # butterflies need CUDA (test_attach)
    "prompt_tuning": ({"method": "prompt_tuning", "num_virtual_tokens": 4}, "prompt_encoder."),
    "prefix_tuning": ({"method": "prefix_tuning", "num_virtual_tokens": 4}, "prompt_encoder."),
}
# What PEFT adds next to the base weights in the state dict (adapter tensors, fixed projections, buffers).
ADAPTER_FRAGMENTS = ("lora_", "hada_", "lokr_", "vera_", "ia3_", "oft_", "boft_", "prompt_encoder", "ranknum")
# Rescaling methods move slowly at the loop's lr; they get a larger one so a few steps show.
LR = {"ia3": 0.1, "vera": 0.1, "prompt_tuning": 0.1, "prefix_tuning": 0.1}
STEPS = 6


def base_weights(model: PeftModel) -> dict[str, torch.Tensor]:
    """The base model's own tensors, under their original names."""
    return {k.replace(".base_layer", ""): v.detach().clone() for k, v in model.get_base_model().state_dict().items()
            if not any(f in k for f in ADAPTER_FRAGMENTS)}


def spec_of(case: str) -> AdapterSpec:
    """The case's options on a small rank, no dropout (so train and eval forwards agree)."""
    options = dict(CASES[case][0])
    method = options["method"]
    small = {"rank": 4} if method in READ_BY["rank"] else {}
    no_dropout = {"dropout": 0.0} if method in READ_BY["dropout"] else {}
    return AdapterSpec(**{**small, **no_dropout, **options})


@pytest.mark.parametrize("case", list(CASES))
def test_method_trains_moves_only_its_weights_and_reloads(case, tiny_llama, train_steps, probe_batch, tmp_path):
    spec, fragment = spec_of(case), CASES[case][1]
    base = tiny_llama()
    original = {k: v.clone() for k, v in base.state_dict().items()}
    model = attach_adapter(base, spec, task="causal_lm", total_steps=STEPS)
    at_start = base_weights(model)
    assert set(at_start) == set(original)
    if spec.init not in ("pissa", "olora"):  # these two move the principal directions out of the base, by design
        assert all(torch.equal(at_start[k], original[k]) for k in original)
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(fragment in n for n in trainable), sorted(trainable)[:3]
    assert param_report(model).trainable == sum(p.numel() for p in trainable.values())

    state = train_steps(model, spec, steps=STEPS, lr=LR.get(spec.method, 1e-2))

    losses = [point["loss"] for point in state.curve]
    assert len(losses) == STEPS and all(map(torch.isfinite, torch.tensor(losses)))
    assert losses[-1] < losses[0], losses
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert moved, "no adapter weight changed"
    after = base_weights(model)
    assert all(torch.equal(after[k], at_start[k]) for k in at_start), "a base weight changed in training"

    model.eval()
    with torch.no_grad():
        expected = model(**probe_batch).logits
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(tiny_llama(), tmp_path).eval()
    with torch.no_grad():
        got = reloaded(**probe_batch).logits
    if case == "adalora":
        # after rank allocation the saved adapter keeps only the live ranks: smaller matmuls, same values
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    else:
        assert torch.equal(got, expected), (got - expected).abs().max()


@pytest.mark.parametrize("case", ["lora", "dora", "loha", "lokr", "vera", "adalora", "ia3", "oft", "boft",
                                  "prompt_tuning", "prefix_tuning"])
def test_method_runs_on_a_bf16_base_with_fp32_adapter_weights(case, tiny_llama, train_steps):
    spec, fragment = spec_of(case), CASES[case][1]
    model = attach_adapter(tiny_llama(torch.bfloat16), spec, task="causal_lm", total_steps=4)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert all(p.dtype == torch.float32 for p in trainable.values())
    assert all(fragment in n for n in trainable), [n for n in trainable if fragment not in n][:3]
    state = train_steps(model, spec, steps=1, lr=1e-2)
    assert torch.isfinite(torch.tensor(state.curve[0]["loss"]))


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_prompt_learning_loss_is_taken_over_the_real_tokens(method, tiny_llama, train_batch):
    """The loop cannot project only the trained positions here (prompt tuning prepends virtual ones to the logits);
    its full loss must equal the cross-entropy over the real tokens alone."""
    model = attach_adapter(tiny_llama(), AdapterSpec(method=method, num_virtual_tokens=4), task="causal_lm").eval()
    assert not supports_selective_logits(model)
    labels = train_batch["labels"]
    n = int((labels[:, 1:] != -100).sum())
    with torch.no_grad():
        loss = causal_lm_loss(model, train_batch, n, selective=False)
        logits = model(input_ids=train_batch["input_ids"], attention_mask=train_batch["attention_mask"]).logits
    logits = logits[:, 4:] if method == "prompt_tuning" else logits
    assert logits.shape[1] == labels.shape[1]
    manual = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100,
                             reduction="sum") / n
    assert torch.allclose(loss, manual, atol=1e-5)


def test_adalora_loss_comes_from_the_model_for_its_orthogonality_penalty(tiny_llama):
    model = attach_adapter(tiny_llama(), AdapterSpec(method="adalora", rank=2), task="causal_lm", total_steps=4)
    assert not supports_selective_logits(model)
    assert supports_selective_logits(attach_adapter(tiny_llama(), AdapterSpec(rank=2), task="causal_lm"))
