"""A worker for the 2-rank gloo test of data-parallel mini-batch GNN-to-MLP training."""
from __future__ import annotations

import os

import torch


def train_rank(rank: int, world: int, workdir: str) -> None:
    """Mini-batch SAGE teacher then FF-G2M student on a tiny graph; saves this rank's weights."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    import torch.distributed as dist

    from graphs.data.csbm import csbm_stream
    from graphs.data.node_splits import make_split
    from graphs.g2m.minibatch import MiniBatchConfig, distill_mini_batch, train_teacher_mini_batch
    from graphs.models.node import build_node_model

    dist.init_process_group("gloo", init_method=f"file://{workdir}/rendezvous", rank=rank, world_size=world)
    try:
        g = csbm_stream(400, 3000, 8, 3, p_in=0.9, signal=0.6, seed=0)
        split = make_split(400, torch.arange(120), torch.arange(120, 200), torch.arange(200, 400), "tran")
        cfg = MiniBatchConfig((3, 3), 32, 64, 3)
        torch.manual_seed(0)
        teacher = build_node_model("sage", 8, 3, hidden=16, norm="batch")
        t = train_teacher_mini_batch(teacher, g, split, cfg, max_epochs=2, patience=2)
        torch.manual_seed(0)
        student = build_node_model("mlp", 8, 3, hidden=16, norm="batch")
        distill_mini_batch(student, g, split, t.logits, cfg, method="ff-g2m", max_epochs=2, patience=2)
        torch.save({"teacher": teacher.state_dict(), "student": student.state_dict()}, f"{workdir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
