"""An engine's state as whole tensors by parameter name, at any ZeRO stage and world size. Not universal
checkpoints: ds_to_universal cannot convert ZeRO 0 (docs/benchmarks.md). Private reads say why, each.
upstream: deepspeed utils/tensor_fragment.py (safe_get_full_*, safe_set_full_*, safe_set_local_*) @ 0.19.8"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist

OPTIMIZER_KEYS = ("exp_avg", "exp_avg_sq")  # AdamW's moments, as torch and DeepSpeed's fragment API name them


def parameter_owners(sizes: Iterable[tuple[str, int]], world_size: int) -> dict[str, int]:
    """Largest first, each to the rank with the fewest bytes so far: the same on every rank."""
    loads = [0] * world_size
    owners = {}
    for name, size in sorted(sizes, key=lambda item: (-item[1], item[0])):
        rank = loads.index(min(loads))
        owners[name] = rank
        loads[rank] += size
    return owners


def partitioned(param: torch.nn.Parameter) -> bool:
    # private: no public test; DeepSpeed's own safe_get_* branch on _hp_mapping (ZeRO 1, 2) and ds_id (ZeRO 3)
    return hasattr(param, "_hp_mapping") or hasattr(param, "ds_id")


def optimizer_steps(engine: Any) -> int:
    """0 before the first step: no moments yet."""
    optimizer = getattr(engine.optimizer, "optimizer", engine.optimizer)  # the torch AdamW inside ZeRO
    for state in optimizer.state.values():
        if "step" in state:
            return int(float(state["step"]))
    return 0


def full_state(engine: Any, param: torch.nn.Parameter, with_moments: bool) -> dict[str, torch.Tensor]:
    """Whole, on its device; with ZeRO a collective (every rank, every parameter, in the same order)."""
    if partitioned(param):
        from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

        state = {"weight": safe_get_full_fp32_param(param)}
        for key in OPTIMIZER_KEYS if with_moments else ():
            state[key] = safe_get_full_optimizer_state(param, key)
        return state
    moments = engine.optimizer.state.get(param, {})
    return {"weight": param.detach(), **{key: moments[key] for key in OPTIMIZER_KEYS if with_moments}}


class HostBuffers:
    """Host copies, on a GPU pinned and kept; page-locking 1.5 GB is slow, so `prepare` runs in a thread."""

    def __init__(self) -> None:
        self.pinned: dict[str, torch.Tensor] = {}
        self.device_copies = False
        self.preparing: threading.Thread | None = None

    def prepare(self, shapes: dict[str, tuple[int, ...]]) -> None:
        def allocate() -> None:
            for key, shape in shapes.items():
                self.pinned[key] = torch.empty(shape, dtype=torch.float32, pin_memory=True)

        self.preparing = threading.Thread(target=allocate, name="checkpoint-pinned-memory", daemon=True)
        self.preparing.start()

    def copy(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach()
        if tensor.device.type == "cpu":
            return tensor.to(torch.float32, copy=True)
        if self.preparing is not None:
            self.preparing.join()
            self.preparing = None
        buffer = self.pinned.get(key)
        if buffer is None or buffer.shape != tensor.shape:
            buffer = torch.empty(tensor.shape, dtype=torch.float32, pin_memory=True)
            self.pinned[key] = buffer
        buffer.copy_(tensor, non_blocking=True)
        self.device_copies = True
        return buffer

    def finish(self, device: torch.device) -> None:
        if self.device_copies:
            torch.cuda.synchronize(device)
            self.device_copies = False


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def snapshot(
    engine: Any,
    owners: dict[str, int],
    rank: int,
    buffers: HostBuffers,
    run_state: dict[str, Any] | None,
) -> dict[str, Any]:
    """This rank's shard in host memory (parameters, RNG, rank 0's run state); every rank, same step."""
    with_moments = optimizer_steps(engine) > 0
    if with_moments and hasattr(next(engine.module.parameters()), "_hp_mapping"):
        link_zero_fragments(engine)
    params: dict[str, dict[str, torch.Tensor]] = {}
    for name, param in engine.module.named_parameters():
        state = full_state(engine, param, with_moments)
        if owners[name] == rank:
            params[name] = {key: buffers.copy(f"{name}/{key}", value) for key, value in state.items()}
    buffers.finish(next(engine.module.parameters()).device)
    shard: dict[str, Any] = {"params": params, "rng": rng_state()}
    if run_state is not None:
        shard["run"] = run_state
    return shard


def run_state_of(engine: Any, step: int, client_state: dict[str, Any]) -> dict[str, Any]:
    return {
        "step": step,
        "optimizer_steps": optimizer_steps(engine),
        "lr_scheduler": copy.deepcopy(engine.lr_scheduler.state_dict()),
        "global_steps": engine.global_steps,
        "global_samples": engine.global_samples,
        "skipped_steps": engine.skipped_steps,
        "client_state": copy.deepcopy(client_state),
    }


def _flat_partitions(engine: Any) -> list[torch.Tensor]:
    zero = engine.optimizer
    # private: no public accessor for the fp32 flat partitions that key AdamW's state inside ZeRO.
    if hasattr(zero, "fp32_partitioned_groups_flat"):  # ZeRO 3: one per sub-group
        return list(zero.fp32_partitioned_groups_flat)
    return [group["params"][0] for group in zero.optimizer.param_groups]  # ZeRO 1, 2: one per param group


def link_zero_fragments(engine: Any) -> None:
    """DeepSpeed links ZeRO 1/2 fragments before later groups have state: safe_get_full_* fails (0->1 resume).
    upstream: deepspeed runtime/zero/stage_1_and_2.py _optimizer_step @ 0.19.8"""
    inner = engine.optimizer.optimizer
    flats = _flat_partitions(engine)
    for param in engine.module.parameters():
        mapping = getattr(param, "_hp_mapping", None)
        if mapping is not None:
            flat = flats[mapping.param_group_index]
            mapping.set_optim_state_fragment(flat, inner.state[flat])


def _zero_optimizer_state(engine: Any, steps: int) -> None:
    """AdamW's state (ZeRO makes it at the first step) as AdamW's _init_group would, linked for safe_set_*."""
    inner = engine.optimizer.optimizer
    on_device = bool(inner.defaults.get("fused") or inner.defaults.get("capturable"))
    for flat in _flat_partitions(engine):
        device = flat.device if on_device else torch.device("cpu")
        inner.state[flat] = {
            "step": torch.tensor(float(steps), dtype=torch.float32, device=device),
            **{key: torch.zeros_like(flat) for key in OPTIMIZER_KEYS},
        }
    link_zero_fragments(engine)


def set_full_state(param: torch.nn.Parameter, value: torch.Tensor, key: str | None) -> None:
    """Private ds_tensor.ds_numel: stage-3 safe_set_full_* overruns the last rank's padded share (measured)."""
    from deepspeed.utils import (
        safe_set_full_fp32_param,
        safe_set_full_optimizer_state,
        safe_set_local_fp32_param,
        safe_set_local_optimizer_state,
    )

    value = value.to(param.device)
    if hasattr(param, "ds_id"):
        group = param.ds_process_group  # type: ignore[attr-defined]
        share = param.ds_tensor.ds_numel  # type: ignore[attr-defined]
        padded = torch.nn.functional.pad(
            value.flatten(), (0, share * dist.get_world_size(group) - value.numel())
        )
        local = padded.narrow(0, share * dist.get_rank(group), share)
        if key is None:
            safe_set_local_fp32_param(param, local)
        else:
            safe_set_local_optimizer_state(param, local, key)
    elif key is None:
        safe_set_full_fp32_param(param, value)
    else:
        safe_set_full_optimizer_state(param, value, key)


def restore(engine: Any, shards: list[dict[str, Any]]) -> dict[str, Any]:
    params: dict[str, dict[str, torch.Tensor]] = {}
    for shard in shards:
        params.update(shard["params"])
    run = next(shard["run"] for shard in shards if "run" in shard)
    named = list(engine.module.named_parameters())
    missing = [name for name, _ in named if name not in params]
    if missing:
        raise RuntimeError(f"the checkpoint has no state for parameters {', '.join(missing)}")
    steps = int(run["optimizer_steps"])
    with_moments = steps > 0
    if partitioned(named[0][1]):
        import deepspeed

        if with_moments:
            _zero_optimizer_state(engine, steps)
        stage3 = hasattr(named[0][1], "ds_id")  # the module's weights, partitioned: gathered to be set
        with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=0, enabled=stage3):
            for name, param in named:
                param.data.copy_(params[name]["weight"])
        for name, param in named:  # the fp32 master weights and moments in the ZeRO optimizer
            set_full_state(param, params[name]["weight"], None)
            for key in OPTIMIZER_KEYS if with_moments else ():
                set_full_state(param, params[name][key], key)
    else:
        optimizer = engine.optimizer
        for name, param in named:
            param.data.copy_(params[name]["weight"])
        if with_moments:
            index = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
            state = {
                index[id(param)]: {
                    "step": torch.tensor(float(steps)),
                    **{key: params[name][key].clone() for key in OPTIMIZER_KEYS},  # not the mapped file
                }
                for name, param in named
            }
            optimizer.load_state_dict(
                {"state": state, "param_groups": optimizer.state_dict()["param_groups"]}
            )
    schedule = engine.lr_scheduler
    schedule.load_state_dict(copy.deepcopy(run["lr_scheduler"]))
    for group, lr in zip(schedule.optimizer.param_groups, schedule.get_last_lr(), strict=True):
        group["lr"] = lr
    engine.global_steps = run["global_steps"]
    engine.global_samples = run["global_samples"]
    engine.skipped_steps = run["skipped_steps"]
    return run
