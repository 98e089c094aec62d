"""Teacher checkpoints: round trip, validation errors, random teachers, student shape checks."""
import pytest
import torch

from condense.nets import get_network
from condense.utils import UserError, atomic_save
from synth.teachers import Model, check_student, load_model, random_teacher, save_model


def test_trained_teacher_is_accurate(teacher):
    assert teacher.meta["test_acc"] > 0.9


def test_round_trip(teacher, digits, tmp_path):
    path = save_model(teacher, tmp_path / "t.pt", dataset=digits)
    loaded = load_model(path, dataset=digits, arch="lenet5")
    x = digits.test_x[:16]
    assert torch.equal(loaded.net(x), teacher.net.eval()(x))
    assert loaded.arch_kwargs == {"norm": "batchnorm"} and loaded.meta["kind"] == "trained"


def test_mismatches_are_user_errors(teacher, digits, tmp_path):
    path = save_model(teacher, tmp_path / "t.pt", dataset=digits)
    with pytest.raises(UserError, match="not the requested"):
        load_model(path, arch="resnet18")
    three = Model(get_network("lenet5", 1, 3, 8), "lenet5", 3, (1, 8, 8), meta={"kind": "trained"})
    with pytest.raises(UserError, match="3 classes"):
        load_model(save_model(three, tmp_path / "three.pt"), dataset=digits)
    blob = torch.load(path, weights_only=True)
    blob["arch"] = "lenet5_half"  # weights of a different architecture
    atomic_save(blob, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="do not fit"):
        load_model(tmp_path / "bad.pt")
    big = Model(get_network("lenet5", 1, 10, 16), "lenet5", 10, (1, 16, 16), meta={"kind": "trained"})
    with pytest.raises(UserError, match="input"):
        load_model(save_model(big, tmp_path / "big.pt"), dataset=digits)
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(UserError):
        load_model(tmp_path / "junk.pt")


def test_student_with_other_input_shape(teacher):
    with pytest.raises(UserError, match="input shape"):
        check_student(get_network("mlp", 1, 10, 16), teacher, torch.device("cpu"))
    with pytest.raises(UserError, match="classes"):
        check_student(get_network("mlp", 1, 7, 8), teacher, torch.device("cpu"))


def test_random_teacher_seeded():
    a, b, c = (random_teacher("convnet", (1, 8, 8), 10, seed=s, arch_kwargs={"width": 8}) for s in (1, 1, 2))
    sa, sb, sc = (m.net.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a.meta["kind"] == "random"
