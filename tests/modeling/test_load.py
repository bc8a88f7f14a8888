"""Base loading: local folders, bitsandbytes 4/8-bit on CPU, frozen weights, one-line failures."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from support.bnb_cpu import bnb_repacks_4bit_on_this_cpu, linear4bit_count
from tokenizers import Tokenizer, models, pre_tokenizers

from peftkit.adapters import attach_adapter
from peftkit.errors import ModelError
from peftkit.modeling.load import attention_backend, load_base
from peftkit.recipe.schema import AdapterSpec, ModelSpec


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, initializer_range=0.2)
    LlamaForCausalLM(cfg).save_pretrained(path)
    vocab = {f"t{i}": i for i in range(128)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="t1", pad_token="t0").save_pretrained(path)
    return path


def spec(path, **quant) -> ModelSpec:
    return ModelSpec(base=str(path), quantization=quant or None, attn_implementation="eager")


def grads_after_step(model, batch):
    model.train()
    model(**batch, labels=batch["input_ids"], use_cache=False).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def lora(model):
    torch.manual_seed(1)
    m = attach_adapter(model, AdapterSpec(rank=4, dropout=0.0), task="causal_lm")
    for n, p in m.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)
    return m


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_base_loads_on_cpu_frozen(tiny_dir, bits):
    base = load_base(spec(tiny_dir, bits=bits))
    kinds = {type(m).__name__ for m in base.model.modules()}
    assert ("Linear4bit" if bits == 4 else "Linear8bitLt") in kinds
    assert not any(p.requires_grad for p in base.model.parameters())
    assert base.fingerprint and base.fingerprint.startswith("sha256-sampled:")


def test_training_after_eval_keeps_correct_4bit_gradients(tiny_dir):
    """An eval pass must not switch 4-bit layers to bitsandbytes' backward-less CPU kernel."""
    batch = {"input_ids": torch.randint(2, 128, (2, 12), generator=torch.Generator().manual_seed(3))}
    fresh = lora(load_base(spec(tiny_dir, bits=4, compute_dtype="float32")).model)
    evald = lora(load_base(spec(tiny_dir, bits=4, compute_dtype="float32")).model)
    evald.eval()
    with torch.no_grad():
        evald(**batch)
    expected, got = grads_after_step(fresh, batch), grads_after_step(evald, batch)
    for name, g in expected.items():
        torch.testing.assert_close(got[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_eval_forward_leaves_every_4bit_weight_as_loaded(tiny_dir):
    """Where bitsandbytes repacks 4-bit weights on an eval-mode forward (AVX512-BF16 CPUs) only the loader's
    protection keeps them as loaded; elsewhere bitsandbytes never repacks. The bytes must not change on any CPU, and
    the protection reports exactly the layers bitsandbytes would have repacked here (observed, not assumed)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from peftkit.modeling.load import keep_cpu_4bit_differentiable

    model = load_base(spec(tiny_dir, bits=4)).model
    packed = {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype == torch.uint8}
    assert len(packed) == linear4bit_count(model) == 14  # 7 projections x 2 layers
    model.eval()
    with torch.no_grad():
        model(input_ids=torch.tensor([[2, 3, 4, 5]]))
    now = dict(model.named_parameters())
    repacked = [n for n, p in packed.items() if now[n].shape != p.shape or not torch.equal(now[n], p)]
    assert not repacked, f"repacked by an eval-mode forward: {repacked}"

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    plain = AutoModelForCausalLM.from_pretrained(tiny_dir, quantization_config=quant, device_map={"": "cpu"})
    assert keep_cpu_4bit_differentiable(plain) == (14 if bnb_repacks_4bit_on_this_cpu() else 0)


def test_missing_local_weights_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{\"model_type\": \"llama\"}")
    with pytest.raises(ModelError) as info:
        load_base(spec(tmp_path))
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)


def test_attention_auto_outside_training_is_the_transformers_default():
    assert attention_backend("auto") == "sdpa" and attention_backend("eager") == "eager"


def test_4bit_base_is_bit_identical_after_training(tiny_dir):
    from accelerate import Accelerator

    from peftkit.recipe.schema import TrainSpec
    from peftkit.training.loop import FitState, fit
    from peftkit.training.optim import build_optimizer, build_scheduler

    model = lora(load_base(spec(tiny_dir, bits=4)).model)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    g = torch.Generator().manual_seed(4)
    batch = {"input_ids": torch.randint(2, 128, (2, 12), generator=g)}
    batch["labels"] = batch["input_ids"].clone()
    spec_ = TrainSpec(max_steps=3, lr=1e-2)
    opt = build_optimizer([p for p in model.parameters() if p.requires_grad], spec_)
    state = fit(model, opt, build_scheduler(opt, spec_), iter(lambda: batch, None), Accelerator(cpu=True),
                spec_, FitState())
    assert state.step == 3
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[n]), n


def test_a_quantized_base_is_placed_on_the_processs_own_device():
    from peftkit.modeling.load import _placement

    # under DDP each rank passes its own device; a GPU goes by index, which Accelerate's prepare() checks
    assert _placement(torch.device("cuda", 1)) == 1 and _placement(torch.device("cuda", 0)) == 0
    assert _placement(torch.device("cpu")) == "cpu"


def test_unquantized_base_lands_on_the_requested_device(tiny_dir):
    base = load_base(spec(tiny_dir), device="meta")  # stands in for a GPU: nothing may stay behind on the CPU
    assert {p.device.type for p in base.model.parameters()} == {"meta"}
