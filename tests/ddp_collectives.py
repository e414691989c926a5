"""Run by tests/test_ddp.py under torchrun with 2 processes: the collectives of
nas_kws.distributed on a real gloo group. Exits non-zero (an assertion) when one misbehaves."""
from __future__ import annotations

import torch
from torch import nn

from nas_kws import distributed
from nas_kws.device import rng_state, set_rng_state


def main() -> None:
    with distributed.session():
        rank, world = distributed.shard()
        assert world == 2 and distributed.is_main() == (rank == 0)
        assert distributed.broadcast_object(f"from rank {rank}") == "from rank 0"
        assert distributed.sum_over_ranks([1.0, rank]) == [2.0, 1.0]

        torch.manual_seed(0)                     # the same net on both ranks
        net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
        distributed.check_replicas(net, "start")
        net[0].weight.grad = torch.full((2, 3), float(rank + 1))   # 1 on rank 0, 2 on rank 1
        distributed.average_gradients(net.parameters())
        assert torch.equal(net[0].weight.grad, torch.full((2, 3), 1.5))
        assert net[1].weight.grad is None        # an unused parameter keeps no gradient

        with torch.no_grad():
            net[1].bias[0] += rank               # rank 1 drifts
        try:
            distributed.check_replicas(net, "after the drift")
        except RuntimeError as err:
            assert "rank(s) [1] differ" in str(err), err
        else:
            raise AssertionError("a drifted replica went unnoticed")

        distributed.seed_ranks(7)                # each rank its own stream, restored per rank
        saved = distributed.rank_rng_states()
        saved = distributed.broadcast_object({**saved, "rng": rng_state()})
        draw = torch.rand(3)
        assert not torch.equal(*[torch.tensor(d) for d in _gathered(draw.tolist())])
        set_rng_state(distributed.own_rng_state(saved))
        assert torch.equal(torch.rand(3), draw)


def _gathered(values: list[float]) -> list[list[float]]:
    out: list[list[float] | None] = [None, None]
    torch.distributed.all_gather_object(out, values)
    return out


if __name__ == "__main__":
    main()
