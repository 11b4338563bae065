"""trainer.model: causal, GPT-2 shaped and initialised, able to fit a batch."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.config import load_config, padded_vocab_size
from trainer.engine import model_config
from trainer.model import GPT, Block, GPTConfig

TINY = GPTConfig(vocab_size=257, block_size=32, n_layer=2, n_head=2, n_embd=32)


def test_future_tokens_do_not_change_past_logits() -> None:
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    tokens = torch.randint(0, 257, (2, 32))
    changed = tokens.clone()
    changed[:, 20:] = torch.randint(0, 257, (2, 12))
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    assert torch.equal(before[:, :20], after[:, :20])
    assert not torch.allclose(before[:, 20:], after[:, 20:])


def test_vocab_is_padded_and_embeddings_tied() -> None:
    model = GPT(TINY)
    assert padded_vocab_size(257) == 320 and padded_vocab_size(50257) == 50304 and padded_vocab_size(64) == 64
    assert model.wte.weight.shape == (320, 32)
    assert model.lm_head.weight is model.wte.weight
    assert model(torch.zeros(1, 5, dtype=torch.long)).shape == (1, 5, 320)


def test_gpt2_init_scales_residual_projections() -> None:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=257, block_size=32, n_layer=8, n_head=4, n_embd=256)
    model = GPT(config)
    residual_std = 0.02 / math.sqrt(2 * config.n_layer)
    block = model.blocks[0]
    assert isinstance(block, Block)
    assert block.attn.proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
    assert block.mlp.proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
    assert block.mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(block.attn.qkv.bias) == 0


def test_gpt2_124m_parameter_count_and_flops() -> None:
    config = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    with torch.device("meta"):
        model = GPT(config)
    # 124M with GPT-2's 50257-token vocabulary (nanoGPT: 124.44M); ours pads it to 50304.
    assert model.num_params(non_embedding=False) == 124_475_904
    # N without the position embeddings (nanoGPT's get_num_params): 124,475,904 - 1024 x 768 = 123,689,472.
    assert model.num_params() == 123_689_472
    # PaLM appendix B: 6N + 12 L H Q T = 6 x 123,689,472 + 12 x 12 x 12 x 64 x 1024
    # = 742,136,832 + 113,246,208.
    assert model.flops_per_token() == 855_383_040


def test_sequence_longer_than_block_is_rejected() -> None:
    with pytest.raises(ValueError, match="exceeds block_size 32"):
        GPT(TINY)(torch.zeros(1, 33, dtype=torch.long))


def test_one_batch_overfits() -> None:
    torch.manual_seed(0)
    model = GPT(TINY)
    inputs = torch.randint(0, 257, (4, 32))
    targets = torch.roll(inputs, -1, dims=1)
    optimizer = torch.optim.AdamW(model.optimizer_groups(0.0), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = model(inputs, targets)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[0] > 5.0  # about ln(257) at initialisation
    assert losses[-1] < 0.05


def test_optimizer_groups_decay_only_matrices() -> None:
    model = GPT(TINY)
    decay, no_decay = model.optimizer_groups(0.1)
    assert all(p.dim() == 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert all(p.dim() == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == model.num_params(
        non_embedding=False
    )


@pytest.mark.parametrize(
    ("overrides", "vocab_size"),
    [
        (["model.preset=tiny", "model.block_size=64"], 257),
        (["model.preset=mini", "model.bias=false"], 50257),
        (["model.preset=small", "model.n_layer=3", "model.block_size=128"], 1000),
    ],
)
def test_parameter_count_without_building_the_model(overrides: list[str], vocab_size: int) -> None:
    """TrainConfig.parameter_count (the stack sizes its grace period with it, without torch) counts what
    the model has."""
    config = load_config(None, [*overrides, "data.path=x", "train.max_steps=1", "checkpoint.dir=x",
                                "checkpoint.every_steps=1", "output.dir=x"])  # fmt: skip
    model = GPT(model_config(config, vocab_size))
    assert config.parameter_count(vocab_size) == model.num_params(non_embedding=False)


def test_gpt2_124m_has_124m_parameters() -> None:
    config = load_config(None, ["model.preset=gpt2-124m", "data.path=x", "train.max_steps=1",
                                "checkpoint.dir=x", "checkpoint.every_steps=1", "output.dir=x"])  # fmt: skip
    # GPT-2 small has 124,439,808 parameters (vocabulary 50,257); the padding to 50,304 adds 47 rows of 768
    assert config.parameter_count() == 124_439_808 + 47 * 768  # data.encoding gpt2 (the default)
