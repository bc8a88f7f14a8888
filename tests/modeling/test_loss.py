"""The selective-logits loss equals transformers' full loss (value and gradients), padded and packed."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from peftkit.adapters import attach_adapter
from peftkit.recipe.schema import AdapterSpec
from peftkit.modeling.loss import causal_lm_loss, head_reads_last_hidden_state, supports_selective_logits


def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, attn_implementation="eager")
    m = attach_adapter(LlamaForCausalLM(cfg), AdapterSpec(rank=4, dropout=0.0), task="causal_lm")
    for n, p in m.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)
    return m


def padded_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 97, (3, 10), generator=g)
    labels = ids.clone()
    labels[0, :6] = -100  # prompt
    labels[1, :3] = -100
    labels[2, 7:] = -100  # padding
    mask = torch.ones_like(ids)
    mask[2, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def packed_batch():
    ids = torch.arange(1, 13).unsqueeze(0)
    labels = ids.clone()
    labels[0, [0, 1, 5, 6, 7]] = -100  # two examples' prompts; each example's first label is ignored
    pos = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6]])
    return {"input_ids": ids, "labels": labels, "position_ids": pos}


def grads(m):
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}


def assert_matches_full_loss(m, batch, **kwargs):
    """causal_lm_loss(..., selective=True, **kwargs) equals transformers' full loss, value and gradients."""
    n = int((batch["labels"][:, 1:] != -100).sum())
    full = causal_lm_loss(m, batch, n, selective=False)
    full.backward()
    g_full = grads(m)
    m.zero_grad()
    got = causal_lm_loss(m, batch, n, selective=True, **kwargs)
    got.backward()
    torch.testing.assert_close(got, full, rtol=1e-6, atol=1e-6)
    for name, g in grads(m).items():
        torch.testing.assert_close(g, g_full[name], rtol=1e-5, atol=1e-7)
    return full.detach(), n


def test_selective_equals_full_loss_and_gradients():
    for batch in (padded_batch(), packed_batch()):
        m = model()
        assert supports_selective_logits(m)
        assert_matches_full_loss(m, batch)


def test_loss_is_divided_by_the_window_token_count():
    m = model()
    batch = padded_batch()
    n = int((batch["labels"][:, 1:] != -100).sum())
    one = causal_lm_loss(m, batch, n, selective=True)
    two = causal_lm_loss(m, batch, 2 * n, selective=True)
    torch.testing.assert_close(one, 2 * two)


def test_chunked_equals_full_loss_and_gradients():
    """Chunks smaller than the trained positions, padded and packed: same loss and gradients as transformers'."""
    for batch in (padded_batch(), packed_batch()):
        m = model()
        assert head_reads_last_hidden_state(m)
        full, n = assert_matches_full_loss(m, batch, chunk=3)
        with torch.no_grad():  # eval: no checkpointing, same value
            torch.testing.assert_close(causal_lm_loss(m, batch, n, selective=True, chunk=3), full)


def test_chunked_path_is_refused_where_the_head_does_not_read_the_last_hidden_state():
    # Gemma 2 soft-caps its logits after the head: head(hidden_states[-1]) is not the logits
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    cfg = Gemma2Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=8, final_logit_softcapping=0.01)
    capped = attach_adapter(Gemma2ForCausalLM(cfg), AdapterSpec(rank=4, dropout=0.0), task="causal_lm")
    assert not head_reads_last_hidden_state(capped)
    prompt = attach_adapter(LlamaForCausalLM(model().base_model.model.config), AdapterSpec(method="prompt_tuning"),
                            task="causal_lm")
    assert not head_reads_last_hidden_state(prompt)  # prompt learning: no selective logits at all
