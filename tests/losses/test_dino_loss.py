"""dino_loss, the centre update, the teacher-temperature schedule and DINOLoss: against a loop
transcription of the DINO paper and against lightly's DINOLoss.

lightly's ``DINOLoss.forward(teacher_out, student_out, epoch=...)`` takes the teacher views first,
skips the same-view pairs and averages over the remaining pairs and the batch, as we do; it keeps
its centre in a (1, 1, K) buffer (ours is (1, K), as in the authors' code) and its warm-up schedule
in float32, so the comparisons during the warm-up are to float32 precision.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from lightly.loss import DINOLoss as LightlyDINOLoss

from lightning_tl.losses import DINOLoss, dino_loss, dino_teacher_temperature, update_dino_center


def reference_dino(
    teacher: list[torch.Tensor], student: list[torch.Tensor], center: torch.Tensor, tau_t: float, tau_s: float
) -> torch.Tensor:
    """Caron et al. 2021, Eq. 2-3 and Algorithm 1: H(P_t(view i), P_s(view j)) over i != j, per image."""
    n, k = teacher[0].shape
    total, pairs = teacher[0].new_zeros(()), 0
    for i, t_view in enumerate(teacher):
        for j, s_view in enumerate(student):
            if i == j:
                continue
            pairs += 1
            for b in range(n):
                t_logits = [(float(t_view[b, c]) - float(center[c])) / tau_t for c in range(k)]
                t_max = max(t_logits)
                t_exp = [math.exp(x - t_max) for x in t_logits]
                p_t = [x / sum(t_exp) for x in t_exp]  # constants: the teacher gets no gradient
                s_logits = [s_view[b, c] / tau_s for c in range(k)]
                log_norm = torch.logsumexp(torch.stack(s_logits), dim=0)
                total = total - sum(p_t[c] * (s_logits[c] - log_norm) for c in range(k)) / n
    return total / pairs


def _views(count: int, n: int, k: int, seed: int, grad: bool = False) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, k, dtype=torch.float64, generator=gen).requires_grad_(grad) for _ in range(count)]


@pytest.mark.parametrize(("g", "v"), [(2, 2), (2, 3), (2, 6), (3, 4)])
@pytest.mark.parametrize(("n", "k"), [(1, 4), (3, 16)])
@pytest.mark.parametrize(("tau_t", "tau_s"), [(0.04, 0.1), (0.07, 0.1), (0.5, 0.3)])
def test_matches_reference_forward_and_backward(
    g: int, v: int, n: int, k: int, tau_t: float, tau_s: float
) -> None:
    teacher = _views(g, n, k, seed=10 * g + v)
    student = _views(v, n, k, seed=100 + n * k, grad=True)
    center = 0.3 * torch.randn(k, dtype=torch.float64)
    ours = dino_loss(teacher, student, center, tau_t, tau_s)
    ref = reference_dino(teacher, student, center, tau_t, tau_s)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    for g_ours, g_ref in zip(
        torch.autograd.grad(ours, student), torch.autograd.grad(ref, student), strict=True
    ):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("g", "v"), [(2, 2), (2, 5)])
@pytest.mark.parametrize("k", [8, 64])
def test_matches_lightly_loss_centre_and_schedule_over_epochs(g: int, v: int, k: int) -> None:
    ours = DINOLoss(k, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_epochs=4).double()
    theirs = LightlyDINOLoss(
        output_dim=k, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=4
    ).double()
    for epoch in range(6):
        teacher = _views(g, 5, k, seed=epoch)
        student = _views(v, 5, k, seed=50 + epoch, grad=True)
        center = ours.center.clone()
        # lightly keeps every teacher temperature as a float32 tensor: scored at that rounded value,
        # our function agrees to float64 precision; our module (exact temperature) to float32's.
        temp32 = float(torch.tensor(ours.teacher_temperature(epoch), dtype=torch.float32))
        loss_fn = dino_loss(teacher, student, center, teacher_temp=temp32)
        loss_module = ours(teacher, student, epoch=epoch)
        loss_theirs = theirs(teacher, student, epoch=epoch)
        torch.testing.assert_close(loss_fn, loss_theirs, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(loss_module, loss_theirs, rtol=1e-6, atol=1e-8)
        grads_fn = torch.autograd.grad(loss_fn, student)
        grads_theirs = torch.autograd.grad(loss_theirs, student)
        for g_fn, g_theirs in zip(grads_fn, grads_theirs, strict=True):
            torch.testing.assert_close(g_fn, g_theirs, rtol=1e-10, atol=1e-12)
        # Both moved their centre by the same moving average after scoring.
        torch.testing.assert_close(ours.center, theirs.center.reshape(1, k), rtol=1e-12, atol=1e-14)
        assert not torch.equal(ours.center, center)


def test_schedule_equals_the_authors_linspace_and_lightlys() -> None:
    expected = np.concatenate([np.linspace(0.04, 0.07, 30), np.full(20, 0.07)])
    ours = [dino_teacher_temperature(e, 0.07, 0.04, warmup_epochs=30) for e in range(50)]
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    theirs = LightlyDINOLoss(warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=30)
    np.testing.assert_allclose(ours[:30], theirs.teacher_temp_schedule.numpy(), rtol=1e-6)
    # Fractional epochs interpolate; no warm-up is constant; a one-epoch warm-up is its start value.
    assert dino_teacher_temperature(1.5, 0.07, 0.04, warmup_epochs=4) == pytest.approx(0.055)
    assert dino_teacher_temperature(3.5, 0.07, 0.04, warmup_epochs=4) == 0.07
    assert dino_teacher_temperature(0, 0.07, 0.04) == 0.07
    assert [dino_teacher_temperature(e, 0.07, 0.04, warmup_epochs=1) for e in (0, 0.5, 1)] == [
        0.04,
        0.04,
        0.07,
    ]


def test_same_view_pairs_are_skipped() -> None:
    # Student view i is teacher view i's crop, so the pair (i, i) is left out: with G = V = 2 the
    # loss is Algorithm 1's H(t0, s1) / 2 + H(t1, s0) / 2.
    t0, t1 = _views(2, 4, 6, seed=1)
    s0, s1 = _views(2, 4, 6, seed=2)
    center = torch.zeros(6, dtype=torch.float64)

    def cross_entropy(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # the single pair (0, 1)
        return reference_dino([t], [t, s], center, 0.04, 0.1)

    expected = (cross_entropy(t0, s1) + cross_entropy(t1, s0)) / 2
    torch.testing.assert_close(dino_loss([t0, t1], [s0, s1], center), expected, rtol=1e-10, atol=1e-12)


def test_degenerate_inputs_exact_values() -> None:
    k = 5
    uniform = [torch.zeros(3, k), torch.full((3, k), 7.0)]  # constant logits: uniform distributions
    assert dino_loss(uniform, uniform, torch.zeros(k)).item() == pytest.approx(math.log(k), rel=1e-6)
    # Student = teacher logits, equal temperatures, zero centre, one image: the entropy of softmax.
    tau = 0.5
    logits = torch.tensor([[0.0, tau * math.log(3.0)]], dtype=torch.float64)  # p = (1/4, 3/4)
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    views = [logits, logits.clone()]
    loss = dino_loss(views, views, torch.zeros(2, dtype=torch.float64), teacher_temp=tau, student_temp=tau)
    assert loss.item() == pytest.approx(entropy, rel=1e-12)
    # The centre is subtracted: a centre equal to the teacher logits makes the teacher uniform.
    loss = dino_loss(views, views, logits[0], teacher_temp=tau, student_temp=tau)
    assert loss.item() == pytest.approx(-(0.5 * math.log(0.25) + 0.5 * math.log(0.75)), rel=1e-12)


def test_very_low_temperature_is_finite_and_teacher_gets_no_gradient() -> None:
    teacher = [(100 * torch.randn(4, 8)).requires_grad_() for _ in range(2)]
    student = [(100 * torch.randn(4, 8)).requires_grad_() for _ in range(3)]
    loss = dino_loss(teacher, student, torch.zeros(1, 8), teacher_temp=1e-3, student_temp=1e-3)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(t.grad is None for t in teacher)
    assert all(s.grad is not None and torch.isfinite(s.grad).all() for s in student)


def test_half_precision_is_scored_in_float32() -> None:
    teacher, student = _views(2, 3, 8, seed=3), _views(4, 3, 8, seed=4)
    out = dino_loss([t.half() for t in teacher], [s.half() for s in student], torch.zeros(8))
    assert out.dtype == torch.float32
    ref = dino_loss([t.half().float() for t in teacher], [s.half().float() for s in student], torch.zeros(8))
    torch.testing.assert_close(out, ref)


def test_autocast_does_not_lower_the_precision() -> None:
    teacher = [t.float() for t in _views(2, 3, 64, seed=8)]
    student = [s.float() for s in _views(5, 3, 64, seed=9)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dino_loss(teacher, student, torch.zeros(64))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, dino_loss(teacher, student, torch.zeros(64)), rtol=1e-6, atol=1e-6)


def test_center_update_is_the_momentum_mean_over_all_teacher_views() -> None:
    teacher = _views(2, 5, 6, seed=5)
    center = torch.randn(1, 6, dtype=torch.float64)
    batch_mean = torch.cat(teacher).mean(dim=0, keepdim=True)
    torch.testing.assert_close(update_dino_center(center, teacher), 0.9 * center + 0.1 * batch_mean)
    torch.testing.assert_close(
        update_dino_center(center[0], teacher, momentum=0.5)[None], (center + batch_mean) / 2
    )
    assert torch.equal(update_dino_center(center, teacher, momentum=1.0), center)
    # Pure: the input centre is untouched; the result keeps its dtype; no graph is recorded.
    before = center.clone()
    out = update_dino_center(center.float(), [t.requires_grad_() for t in teacher])
    assert torch.equal(center, before) and out.dtype == torch.float32 and not out.requires_grad


def test_module_keeps_the_centre_in_its_state_dict_and_resumes_exactly() -> None:
    batches = [(_views(2, 4, 8, seed=s), _views(4, 4, 8, seed=100 + s)) for s in range(5)]
    full = DINOLoss(8, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_epochs=3)
    full_losses = [full(t, s, epoch=e) for e, (t, s) in enumerate(batches)]

    head = DINOLoss(8, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_epochs=3)
    for e, (t, s) in enumerate(batches[:2]):
        head(t, s, epoch=e)
    state = copy.deepcopy(head.state_dict())
    assert set(state) == {"center"} and state["center"].shape == (1, 8)
    resumed = DINOLoss(8, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_epochs=3)
    resumed.load_state_dict(state)
    for e, (t, s) in enumerate(batches[2:], start=2):
        assert torch.equal(resumed(t, s, epoch=e), full_losses[e])
    assert torch.equal(resumed.center, full.center)


def test_module_eval_mode_leaves_the_centre_and_epoch_is_needed_during_warm_up() -> None:
    loss_fn = DINOLoss(4).eval()
    views = [torch.randn(2, 4), torch.randn(2, 4)]
    loss_fn(views, views)
    assert torch.equal(loss_fn.center, torch.zeros(1, 4))
    loss_fn.train()(views, views)
    assert not torch.equal(loss_fn.center, torch.zeros(1, 4))
    assert loss_fn.teacher_temperature() == 0.04
    warm = DINOLoss(4, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_epochs=10)
    with pytest.raises(ValueError, match="epoch is needed: the teacher temperature warms up over 10 epochs"):
        warm(views, views)
    assert warm.teacher_temperature(0) == 0.04
    assert "warmup_epochs=10" in repr(warm)


def test_bad_inputs_raise() -> None:
    t, s = _views(2, 3, 4, seed=6), _views(4, 3, 4, seed=7)
    c = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"teacher_out must hold at least 2 views.*got 1"):
        dino_loss(t[:1], s, c)
    with pytest.raises(ValueError, match=r"student_out must hold the 2 teacher .* got 1 student views"):
        dino_loss(t, s[:1], c)
    with pytest.raises(ValueError, match=r"student_out\[3\] has \(3, 5\), teacher_out\[0\] has \(3, 4\)"):
        dino_loss(t, [*s[:3], torch.randn(3, 5)], c)
    with pytest.raises(ValueError, match=r"teacher_out\[1\] has \(2, 4\)"):
        dino_loss([t[0], t[1][:2]], s, c)
    with pytest.raises(ValueError, match=r"center must have shape \(K,\) or \(1, K\) with K=4.*got \(5,\)"):
        dino_loss(t, s, torch.zeros(5))
    with pytest.raises(ValueError, match="teacher_temp must be > 0, got 0"):
        dino_loss(t, s, c, teacher_temp=0)
    with pytest.raises(ValueError, match=r"student_temp must be > 0, got -0\.1"):
        dino_loss(t, s, c, student_temp=-0.1)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got 1.5"):
        update_dino_center(c, t, momentum=1.5)
    with pytest.raises(ValueError, match=r"teacher_out\[0\] must have shape \(N, 4\)"):
        update_dino_center(c, [torch.randn(3, 4, 1)])
    with pytest.raises(ValueError, match="warmup_epochs must be >= 0, got -1"):
        dino_teacher_temperature(0, warmup_epochs=-1)
    with pytest.raises(ValueError, match="warmup_teacher_temp must be > 0"):
        DINOLoss(4, warmup_teacher_temp=0.0, warmup_epochs=3)
    with pytest.raises(ValueError, match="epoch must be >= 0, got -1"):
        dino_teacher_temperature(-1)
    with pytest.raises(ValueError, match=r"center_momentum must be in \[0, 1\], got -0.1"):
        DINOLoss(4, center_momentum=-0.1)
    with pytest.raises(ValueError, match="out_dim must be >= 1"):
        DINOLoss(0)
