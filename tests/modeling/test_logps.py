"""sequence_logps: the per-answer log-probability sums every preference objective compares, computed only at
trained positions, equal to the sum read off the model's full logits (padded rows, chunked or not)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from peftkit.modeling.logps import sequence_logps
from peftkit.modeling.tokens import IGNORE_INDEX as IGNORE


def _model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def _batch() -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 97, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # a shorter, right-padded row
    labels = torch.full_like(ids, IGNORE)
    labels[0, 5:] = ids[0, 5:]
    labels[1, 4:9] = ids[1, 4:9]
    labels[2, 10:] = ids[2, 10:]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _by_hand(model, batch) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    logp = logits[:, :-1].log_softmax(-1)
    targets = batch["labels"][:, 1:]
    out = []
    for r in range(targets.shape[0]):
        at = (targets[r] != IGNORE).nonzero().squeeze(1)
        out.append(logp[r, at, targets[r, at]].sum())
    return torch.stack(out)


def test_sums_match_the_full_logits():
    model, batch = _model(), _batch()
    with torch.no_grad():
        sums, counts = sequence_logps(model, batch)
        want = _by_hand(model, batch)
    assert counts.tolist() == [7, 5, 2]
    torch.testing.assert_close(sums, want, rtol=1e-5, atol=1e-5)


def test_chunked_and_full_vocabulary_paths_agree():
    model, batch = _model(), _batch()
    with torch.no_grad():
        plain = sequence_logps(model, batch)[0]
        chunked = sequence_logps(model, batch, chunk=3)[0]
        unselective = sequence_logps(model, batch, selective=False)[0]
    torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(unselective, plain, rtol=1e-5, atol=1e-5)


def test_gradients_flow_through_the_chunked_path():
    model, batch = _model(), _batch()
    sequence_logps(model, batch, chunk=3)[0].sum().backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0


def test_a_prefix_reads_another_set_of_columns():
    model, batch = _model(), _batch()
    kl = {f"kl_{k}": v for k, v in batch.items()}
    with torch.no_grad():
        torch.testing.assert_close(sequence_logps(model, kl, prefix="kl_")[0], sequence_logps(model, batch)[0])
