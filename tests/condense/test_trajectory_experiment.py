"""experiments.trajectory: the rows it runs, the sets it saves, the evaluation epochs it asks for."""
import pytest
import torch

from condense.evaluate import Summary
from condense.synset import SyntheticSet
from experiments import trajectory

TINY = trajectory.Setting((1,), 4, 1, 2, dict(iterations=1, syn_steps=2, expert_epochs=1, max_start_epoch=1, lr_img=10.0),
                          num_evals=1, eval_epochs=3, expert_batch=64)  # fmt: skip


@pytest.mark.slow
def test_trajectory_main_rows_save_sets_and_use_the_requested_epochs(tmp_path, monkeypatch):
    monkeypatch.setitem(trajectory.SCALES["cpu"], "digits", TINY)
    calls = []

    def record(*args, protocol, epochs, **kw):
        calls.append((protocol, epochs))
        return {"convnet": Summary("convnet", [0.5], [0.6], protocol=protocol)}

    monkeypatch.setattr(trajectory, "evaluate_images", record)
    monkeypatch.setattr(trajectory, "evaluate_synset", record)
    for published, epochs in ((False, TINY.eval_epochs), (True, None)):  # the second run reuses the cached experts
        calls.clear()
        (section,) = trajectory.run("cpu", ["digits"], root=None, work=tmp_path, device=torch.device("cpu"), part="main",
                                    published=published, log=lambda m: None)  # fmt: skip
        assert [r["name"] for r in section["rows"]] == ["random real", "MTT", "AST"]
        assert calls == [("dc", epochs), ("ast", epochs)] * 3
    for row in ("mtt", "ast"):
        s = SyntheticSet.load(tmp_path / f"sets_digits_ipc1_{row}.pt")
        assert len(s) == 10 and s.meta["method"] == row and s.lr is not None
