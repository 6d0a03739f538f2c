"""ConvMuonSGD: the Newton-Schulz orthogonalisation, the conv and SGD updates, schedules, state, and real learning."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from imagenette_drift.data import ImagenetteDataModule
from imagenette_drift.models import ImagenetteNet
from imagenette_drift.optim import ConvMuonSGD, Muon, orthogonalize


def _newton_schulz_on_x(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The textbook iteration on the wide matrix itself (Jordan 2024), in float64, as the reference."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    x = matrix.double()
    transposed = x.size(0) > x.size(1)
    x = x.T if transposed else x
    x = x / x.norm()
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if transposed else x


@pytest.mark.parametrize("shape", [(64, 576), (32, 27), (128, 64)])
def test_orthogonalize_matches_the_iteration_on_the_matrix(shape: tuple[int, int]) -> None:
    matrix = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    result = orthogonalize(matrix)
    assert result.shape == matrix.shape and result.dtype == matrix.dtype
    reference = _newton_schulz_on_x(matrix)
    assert (
        result.double() - reference
    ).norm() / reference.norm() < 0.06  # bf16 rounding, not a different map
    singular = torch.linalg.svdvals(result.double())
    assert singular.min() > 0.6 and singular.max() < 1.25  # every direction moves by about the same amount
    u, _, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    cosine = (result.double() * (u @ vh)).sum() / (result.double().norm() * (u @ vh).norm())
    assert cosine > 0.97


def _params(seed: int = 0) -> tuple[nn.Parameter, nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return nn.Parameter(torch.randn(16, 8, 3, 3, generator=gen)), nn.Parameter(torch.randn(16, generator=gen))


def _grads(conv: nn.Parameter, bias: nn.Parameter, step: int) -> None:
    gen = torch.Generator().manual_seed(100 + step)
    conv.grad = torch.randn(conv.shape, generator=gen)
    bias.grad = torch.randn(bias.shape, generator=gen)


def test_non_conv_parameters_follow_sgd_exactly_including_the_schedule() -> None:
    conv, bias = _params()
    twin = nn.Parameter(bias.detach().clone())
    muon = ConvMuonSGD([conv, bias], lr=0.05, weight_decay=1e-3, sgd_lr=0.4, sgd_momentum=0.9)
    sgd = torch.optim.SGD([twin], lr=0.4, momentum=0.9, nesterov=True, weight_decay=1e-3)
    schedules = [torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step) for opt in (muon, sgd)]
    for step in range(4):
        _grads(conv, bias, step)
        twin.grad = bias.grad.clone()
        muon.step()
        sgd.step()
        for schedule in schedules:
            schedule.step()
        torch.testing.assert_close(bias.detach(), twin.detach(), rtol=0, atol=1e-6)


def test_conv_step_is_the_orthogonalised_momentum_with_decoupled_decay() -> None:
    conv, bias = _params()
    before = conv.detach().clone()
    muon = ConvMuonSGD([conv, bias], lr=0.1, momentum=0.95, nesterov=True, weight_decay=0.5)
    _grads(conv, bias, 0)
    grad = conv.grad.clone()
    muon.step()
    # First step: momentum buffer = g, Nesterov direction = g + 0.95 g; orthogonalisation removes the scale.
    update = orthogonalize((grad * 1.95).reshape(16, -1)).reshape_as(conv)
    torch.testing.assert_close(conv.detach(), before * (1 - 0.1 * 0.5) - 0.1 * update, rtol=0, atol=1e-6)
    per_filter = (conv.detach() - before * (1 - 0.05)).reshape(16, -1).norm(dim=1)
    assert per_filter.std() / per_filter.mean() < 0.3  # every output filter moves about equally


def test_state_dict_resumes_exactly() -> None:
    conv, bias = _params()
    muon = ConvMuonSGD([conv, bias], lr=0.1)
    for step in range(2):
        _grads(conv, bias, step)
        muon.step()
    conv2, bias2 = (nn.Parameter(p.detach().clone()) for p in (conv, bias))
    resumed = ConvMuonSGD([conv2, bias2], lr=0.1)
    resumed.load_state_dict(copy.deepcopy(muon.state_dict()))
    _grads(conv, bias, 2)
    conv2.grad, bias2.grad = conv.grad.clone(), bias.grad.clone()
    muon.step()
    resumed.step()
    assert torch.equal(conv, conv2) and torch.equal(bias, bias2)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"lr": -1.0}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"sgd_lr": -0.1}, "sgd_lr"),
        ({"ns_steps": 0}, "ns_steps"),
    ],
)
def test_bad_hyperparameters_are_named(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=f"ConvMuonSGD {named} must be"):
        ConvMuonSGD(_params(), **kwargs)


@pytest.mark.slow  # trains a ResNet-18 for 25 steps
def test_muon_fits_real_images_faster_than_it_starts(sample_root) -> None:
    """32 real sample images, 25 steps: the training loss falls well below chance (ln 10 = 2.30)."""
    torch.manual_seed(0)
    dm = ImagenetteDataModule(
        root=str(sample_root), batch_size=32, num_workers=0, image_size=64, train_image_size=64
    )
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    net = ImagenetteNet("resnet18", 10, channels_last=False)
    optimizer = ConvMuonSGD(net.parameters(), lr=0.05, sgd_lr=0.05)
    losses = []
    for _ in range(25):
        loss = nn.functional.cross_entropy(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 1.8 and min(losses[-5:]) < 0.5, losses


def test_a_group_added_later_follows_its_own_schedule() -> None:
    conv, bias = _params()
    extra = nn.Parameter(torch.ones(4))
    muon = ConvMuonSGD([conv, bias], lr=0.1, sgd_lr=0.4)
    muon.add_param_group({"params": [extra], "lr": 0.2})
    muon.param_groups[1]["lr"] = 0.1  # a scheduler halves it
    extra.grad = torch.ones(4)
    muon.step()
    torch.testing.assert_close(extra.detach(), torch.full((4,), 1 - 0.2 * 1.9))  # sgd_lr 0.4 halved, nesterov


def test_torch_muon_still_refuses_conv_filters() -> None:
    """ConvMuonSGD exists because `torch.optim.Muon` takes 2-D weights only. When this fails, torch accepts 4-D
    conv filters: compare it with ConvMuonSGD on the conv tests above and retire the hand-written one if it
    matches."""
    if not hasattr(torch.optim, "Muon"):
        pytest.skip(f"torch {torch.__version__} has no torch.optim.Muon (added in 2.9)")
    conv = nn.Parameter(torch.randn(16, 8, 3, 3))
    try:
        torch.optim.Muon([conv])
    except ValueError:
        return
    pytest.fail(
        f"torch {torch.__version__}'s torch.optim.Muon now accepts 4-D conv weights: revisit ConvMuonSGD "
        "(imagenette_drift/optim.py) and use torch's if it does the same."
    )


def test_the_old_name_muon_still_works_and_says_it_is_deprecated() -> None:
    conv, bias = _params()
    with pytest.warns(FutureWarning, match="renamed imagenette_drift.optim.ConvMuonSGD"):
        old = Muon([conv, bias], lr=0.1)
    assert isinstance(old, ConvMuonSGD)
    _grads(conv, bias, 0)
    old.step()
    conv2, bias2 = (nn.Parameter(p.detach().clone()) for p in (conv, bias))
    new = ConvMuonSGD([conv2, bias2], lr=0.1)
    new.load_state_dict(
        copy.deepcopy(old.state_dict())
    )  # an optimizer state saved under the old name resumes
    _grads(conv, bias, 1)
    conv2.grad, bias2.grad = conv.grad.clone(), bias.grad.clone()
    old.step()
    new.step()
    assert torch.equal(conv, conv2) and torch.equal(bias, bias2)
