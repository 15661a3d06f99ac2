"""Run under torchrun: prove DDP averages gradients across ranks (each rank sees different data)."""

import sys

import torch
import torch.distributed as dist
from dermedge.training import distributed
from dermedge.training.config import load_config
from dermedge.training.train import build_method


def flat_grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])


def main() -> int:
    distributed.init_from_env("cpu")
    cfg = load_config(None, ["method=simclr", "arch=resnet18", "img_size=32"], data=["unused"])
    torch.manual_seed(0)  # same initial weights on every rank
    model = build_method(cfg)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    g = torch.Generator().manual_seed(100 + distributed.rank())  # different data per rank
    views = [torch.randn(4, 3, 32, 32, generator=g) for _ in range(2)]
    with ddp.no_sync():
        loss, _ = ddp(views)
        loss.backward()
    local = flat_grads(model).clone()
    model.zero_grad()
    loss, _ = ddp(views)
    loss.backward()
    synced = flat_grads(model)
    world = distributed.world_size()
    all_local = [torch.zeros_like(local) for _ in range(world)]
    all_synced = [torch.zeros_like(synced) for _ in range(world)]
    dist.all_gather(all_local, local)
    dist.all_gather(all_synced, synced)
    if distributed.rank() == 0:
        differ = not torch.allclose(all_local[0], all_local[1])
        same = all(torch.allclose(all_synced[0], s, atol=1e-6) for s in all_synced[1:])
        print(f"RESULT local_grads_differ={differ} synced_grads_equal={same} world={world}")
    distributed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
