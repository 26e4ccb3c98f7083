"""A tiny DDP training over gloo, for the multi-node tests: the same global batch and seed whatever the
layout, so 2 nodes x 1 process must end with exactly the parameters of 1 node x 2 processes. Rank 0
prints them. FAIL_HERE in the environment makes this node fail before joining."""
import os
import sys

import torch
import torch.distributed as dist

if os.environ.get("FAIL_HERE"):
    print("this node fails on purpose", flush=True)
    sys.exit(3)
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = torch.nn.Linear(8, 1)
ddp = torch.nn.parallel.DistributedDataParallel(model)
optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
generator = torch.Generator().manual_seed(1234)
data, target = torch.randn(64, 8, generator=generator), torch.randn(64, 1, generator=generator)
for step in range(5):
    optimizer.zero_grad()
    loss = ((ddp(data[rank::world]) - target[rank::world]) ** 2).mean()
    loss.backward()
    optimizer.step()


def say(line: str) -> None:  # one write per line: two ranks share one output file
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


if rank == 0:
    say(f"params {[p.tolist() for p in model.parameters()]}")
say(f"rank {rank} of {world} done")
dist.barrier()  # both ranks are done before either leaves
# Leave without tearing gloo down: on this CPU build its teardown can abort ("terminate called without an
# active exception") when the peer is already gone, which is the torch build's flake, not the test's subject.
os._exit(0)
