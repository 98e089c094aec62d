"""GeneratorKD (DAFL, DFAD, ZSKT): presets, end to end on digits vs the noise-input student, determinism, resume."""
import dataclasses

import pytest
import torch

from condense.checkpoint import Checkpointer
from condense.evaluate import accuracy
from condense.nets import get_network
from condense.utils import UserError
from synth.baselines import train_on_noise
from synth.generator_kd import GeneratorKDConfig, train_generator_kd

# digits-scale settings (8x8, seconds): small generator, few iterations, Adam students
SMALL = {
    "dafl": dict(iterations=200, batch_size=64, ngf=8, lr_g=0.02, lr_s=5e-3),
    "dfad": dict(iterations=40, batch_size=64, ngf=8, student_optimizer="adam", lr_s=5e-3, weight_decay=0.0),
    "zskt": dict(iterations=20, batch_size=64, ngf=8, lr_s=5e-3),
}


def test_presets_are_published_settings():
    dafl = GeneratorKDConfig.from_preset("dafl")
    assert (dafl.batch_size, dafl.nz, dafl.lr_g, dafl.lr_s, dafl.oh, dafl.ie, dafl.a) == (512, 100, 0.2, 2e-3, 1.0, 5.0, 0.1)
    dfad = GeneratorKDConfig.from_preset("dfad")
    assert (dfad.n_student, dfad.lr_s, dfad.lr_g, dfad.student_optimizer) == (5, 0.01, 1e-3, "sgd")
    zskt = GeneratorKDConfig.from_preset("zskt")
    assert (zskt.n_student, zskt.beta, zskt.grad_clip, zskt.schedule, zskt.batch_size) == (10, 250.0, 5.0, "cosine", 128)
    with pytest.raises(UserError):
        GeneratorKDConfig.from_preset("dafl", nope=1)
    with pytest.raises(UserError):
        GeneratorKDConfig.from_preset("gan")
    with pytest.raises(UserError):
        GeneratorKDConfig.from_preset("zskt", temperature=-1.0).validate()


def _student(seed=0):
    torch.manual_seed(seed)
    return get_network("lenet5_half", 1, 10, 8)


def _run(teacher, digits, preset):
    cfg = GeneratorKDConfig.from_preset(preset, **SMALL[preset])
    res = train_generator_kd(teacher, _student(), cfg, pixel_stats=(digits.mean, digits.std), progress=False)
    return cfg, accuracy(res.student, digits.test_x, digits.test_y, device="cpu")


def test_dafl_beats_noise_student(plain_teacher, digits):
    """DAFL's setting (teacher without BN); margins 0.10-0.29 over seeds 0-3 when this was written."""
    cfg, acc = _run(plain_teacher, digits, "dafl")
    noise = train_on_noise(plain_teacher, _student(), steps=cfg.iterations, batch_size=64, lr=cfg.lr_s)
    acc_noise = accuracy(noise, digits.test_x, digits.test_y, device="cpu")
    assert acc > acc_noise + 0.1, (acc, acc_noise)


@pytest.mark.parametrize("preset", ["dfad", "zskt"])
def test_adversarial_presets_learn(teacher, digits, preset):
    """In a few seconds DFAD/ZSKT only get past chance (10 %); the noise comparison needs longer runs (experiments.synth)."""
    _, acc = _run(teacher, digits, preset)
    assert acc > 0.15, (preset, acc)


def test_zskt_attention_needs_matching_maps(teacher):
    cfg = GeneratorKDConfig.from_preset("zskt", iterations=1, batch_size=8, ngf=4)
    with pytest.raises(UserError, match="features"):
        train_generator_kd(teacher, get_network("mlp", 1, 10, 8), cfg, progress=False)


def test_same_seed_same_student_and_resume(teacher, tmp_path):
    cfg = GeneratorKDConfig.from_preset("dafl", iterations=4, batch_size=16, ngf=4)
    a = train_generator_kd(teacher, _student(), cfg, seed=3, progress=False).student.state_dict()
    b = train_generator_kd(teacher, _student(), cfg, seed=3, progress=False).student.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ck = Checkpointer(tmp_path / "ck.pt", every=2)
    train_generator_kd(teacher, _student(), dataclasses.replace(cfg, iterations=2), seed=3, progress=False, checkpoint=ck)
    c = train_generator_kd(teacher, _student(), cfg, seed=3, progress=False, checkpoint=ck).student.state_dict()
    assert all(torch.equal(a[k], c[k]) for k in a)
