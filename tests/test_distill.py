"""Knowledge distillation (train --teacher), the fixed validation split (--split-seed) and hvcnet."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mnist_cnn.artifacts.runs import SplitSpec, split_of
from mnist_cnn.errors import ConfigError
from mnist_cnn.training.distill import distill_loss
from tests.helpers import run_cli, tiny_run, tiny_train_argv


def test_split_seed_fixes_the_split_whatever_the_training_seed(tiny_data):
    from mnist_cnn.training.config import TrainConfig
    from mnist_cnn.training.device_data import prepare_data

    def val_of(**kw):
        cfg = TrainConfig(data_dir=str(tiny_data), val_size=100, **kw).validate()
        return prepare_data(cfg, torch.device("cpu")).val_x

    np.testing.assert_array_equal(val_of(seed=1, split_seed=0), val_of(seed=0))
    np.testing.assert_array_equal(val_of(seed=5, split_seed=3), val_of(seed=3))
    assert not np.array_equal(val_of(seed=1), val_of(seed=0))  # without it the split follows the seed


def test_split_of_reads_the_split_seed():
    assert split_of({"val_size": 100, "seed": 4}) == SplitSpec(100, 4)
    assert split_of({"val_size": 100, "seed": 4, "split_seed": None}) == SplitSpec(100, 4)
    assert split_of({"val_size": 100, "seed": 4, "split_seed": 0}) == SplitSpec(100, 0)


def test_distill_loss_is_cross_entropy_plus_the_teacher_term():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 10), torch.arange(8) % 10
    t = 3.0
    own = F.softmax(logits / t, 1)
    # a teacher that agrees with the student adds nothing: KL = 0
    got = distill_loss(logits, y, own, alpha=0.25, temperature=t, label_smoothing=0.1)
    torch.testing.assert_close(got, 0.75 * F.cross_entropy(logits, y, label_smoothing=0.1))
    # alpha 1 is the teacher term alone, T^2-scaled KL, and it pulls the student towards the teacher
    teacher = F.one_hot((y + 1) % 10, 10).float() * 0.9 + 0.01
    s = logits.clone().requires_grad_(True)
    loss = distill_loss(s, y, teacher, alpha=1.0, temperature=t, label_smoothing=0.0)
    want = t**2 * F.kl_div(F.log_softmax(logits / t, 1), teacher, reduction="batchmean")
    torch.testing.assert_close(loss.detach(), want)
    loss.backward()
    assert s.grad is not None
    target = (y + 1) % 10
    assert (s.grad[torch.arange(8), target] < 0).all()  # gradient descent raises the teacher's class


def test_a_student_learns_from_a_teacher_with_the_same_split(tmp_path, tiny_data):
    teacher = tiny_run(tmp_path, tiny_data, "teacher", seed=0, split_seed=0)
    student = tiny_run(tmp_path, tiny_data, "student", seed=1, split_seed=0, teacher=str(teacher.run_dir))
    assert student.meta["config"]["teacher"] == str(teacher.run_dir)
    assert student.meta["config"]["split_seed"] == 0
    (record,) = student.meta["teachers"]  # provenance: the teacher's weights, by hash
    assert record["file"] == str((teacher.run_dir / "model.safetensors").resolve())
    assert record["sha256"] == hashlib.sha256((teacher.run_dir / "model.safetensors").read_bytes()).hexdigest()
    from mnist_cnn.models.files import load_model

    assert load_model(student.run_dir / "model.safetensors")[1]["teachers"] == [record]  # and in the file
    assert np.isfinite(student.history[-1]["train_loss"])
    # two teachers, comma-separated: the second one's split is fixed, the first one's follows its seed (0)
    both = f"{teacher.run_dir}, {student.run_dir}"
    two = tiny_run(tmp_path, tiny_data, "two", seed=2, split_seed=0, teacher=both)
    assert two.meta["config"]["teacher"] == both


def test_soft_targets_average_the_teachers_softened_probabilities(tmp_path, tiny_data):
    from mnist_cnn.inference.ensemble import load_member
    from mnist_cnn.training.distill import soft_targets

    a = tiny_run(tmp_path, tiny_data, "a", seed=0)
    b = tiny_run(tmp_path, tiny_data, "b", seed=3, split_seed=0)
    members = [load_member(a.run_dir), load_member(b.run_dir)]
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    got = soft_targets(members, images, temperature=2.0, batch_size=2)
    each = [soft_targets([m], images, temperature=2.0, batch_size=3) for m in members]
    torch.testing.assert_close(got, (each[0] + each[1]) / 2)
    torch.testing.assert_close(got.sum(1), torch.ones(5))
    # a higher temperature gives softer targets
    assert soft_targets(members, images, 8.0, 5).max() < got.max()


def test_a_teacher_that_saw_the_students_validation_images_is_refused(tmp_path, tiny_data):
    teacher = tiny_run(tmp_path, tiny_data, "teacher", seed=0)  # split seed 0
    out = tmp_path / "student"
    r = run_cli(*tiny_train_argv(tiny_data, out, "--seed", "1", "--teacher", str(teacher.run_dir)))
    assert r.exit_code != 0
    assert "different validation split" in r.stderr and "--split-seed" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()  # a config error leaves no run folder
    ok = run_cli(
        *tiny_train_argv(tiny_data, out, "--seed", "1", "--split-seed", "0", "--teacher", str(teacher.run_dir))
    )
    assert ok.exit_code == 0, ok.stderr
    assert "distilling from" in ok.stderr


@pytest.mark.parametrize(
    "flags, field",
    [
        (["--distill-alpha", "0"], "distill_alpha"),
        (["--distill-alpha", "1.5"], "distill_alpha"),
        (["--distill-temperature", "0"], "distill_temperature"),
        (["--split-seed", "-1"], "split_seed"),
    ],
)
def test_bad_distillation_flags_are_one_line_errors(tmp_path, tiny_data, flags, field):
    r = run_cli(*tiny_train_argv(tiny_data, tmp_path / "run", *flags))
    assert r.exit_code != 0 and field in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_a_missing_teacher_is_a_clear_error(tmp_path, tiny_data):
    r = run_cli(*tiny_train_argv(tiny_data, tmp_path / "run", "--teacher", str(tmp_path / "nope")))
    assert r.exit_code != 0 and "nope" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_hvcnet_has_the_papers_size_and_branch_shapes():
    from mnist_cnn import create_model
    from mnist_cnn.models.registry import count_params

    paper = create_model("hvcnet")  # channels 32..160, three HVC branches
    assert 1_400_000 < count_params(paper) < 1_600_000
    assert [c[0].out_channels for c in paper.convs] == [32, 48, 64, 80, 96, 112, 128, 144, 160]
    assert [h.weight.shape for h in paper.heads] == [(10, 22 * 22 * 8, 8), (10, 16 * 16 * 14, 8), (10, 100 * 20, 8)]
    small = create_model("hvcnet", width=8, layers=6).eval()
    assert small(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ConfigError, match="capsule_dim"):
        create_model("hvcnet", width=8, capsule_dim=7)
    with pytest.raises(ConfigError, match="no pixels"):
        create_model("hvcnet", layers=15)
