"""``condense evaluate``: protocol-true table, --test-every column, progress per pass, resume, its own Ctrl-C line."""
import pytest

import condense.evaluate as ev
from condense.cli import main
from condense.synset import SyntheticSet
from condense.data import load_dataset

ARGS = ["--models", "mlp", "--num-evals", "2", "--epochs", "2", "--no-dsa"]


@pytest.fixture()
def set_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    digits = load_dataset("digits")
    path = tmp_path / "set.pt"
    SyntheticSet(digits.train_x[:20], digits.train_y[:20], meta={"dataset": digits.describe()}).save(path)
    return path


def test_table_is_protocol_true_and_test_every_adds_the_labelled_column(set_file, tmp_path, capsys):
    assert main(["evaluate", str(set_file), *ARGS]) == 0
    captured = capsys.readouterr()
    header = captured.out.splitlines()[0]
    assert "final acc" in header and "max-over" not in header  # dc: tested after the last pass only
    assert "eval mlp 1/2" in captured.err and "/3 [" in captured.err and "pass" in captured.err  # a bar over the E + 1 passes
    assert not list((tmp_path / "cache").rglob("*.pt"))  # complete: no state left behind
    assert main(["evaluate", str(set_file), *ARGS, "--test-every", "1", "--no-progress"]) == 0
    assert "max-over-checkpoints % (not part of the protocol)" in capsys.readouterr().out.splitlines()[0]


def test_ctrl_c_prints_evaluate_message_and_rerun_resumes(set_file, tmp_path, capsys, monkeypatch):
    real, calls = ev.train_and_test, []

    def second_is_interrupted(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(ev, "train_and_test", second_is_interrupted)
    state = tmp_path / "state.pt"
    assert main(["evaluate", str(set_file), *ARGS, "--no-progress", "--state", str(state)]) == 130
    err = capsys.readouterr().err
    assert f"evaluation interrupted; 1 finished network(s) kept in {state}: rerun the same command" in err
    assert "checkpoint" not in err  # not distill's message
    assert main(["evaluate", str(set_file), *ARGS, "--no-progress", "--state", str(state)]) == 0
    assert "resuming mlp: 1 finished network(s)" in capsys.readouterr().err and len(calls) == 3 and not state.exists()
    assert main(["evaluate", str(set_file), *ARGS, "--precision", "fp8"]) == 2


def test_unwritable_default_cache_only_skips_the_state(set_file, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # the cache directory cannot be created
    assert main(["evaluate", str(set_file), *ARGS, "--no-progress"]) == 0
    assert "not kept for a rerun" in capsys.readouterr().err
    assert main(["evaluate", str(set_file), *ARGS, "--no-progress", "--state", str(blocker / "s.pt")]) == 2

