"""The boundary probe: does reflect (Neumann) padding read bars cut by the border better than zero padding?"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdeconv.boundary import set_boundary
from pdeconv.experiment.stats import paired

_BAR = 7  # pixels of a bar; 2–3 of them inside the image


def _bars(n: int, size: int, g: torch.Generator, noise: float = 0.3) -> tuple[Tensor, Tensor]:
    """Images of Gaussian noise (std ``noise``) with a bar (+1.5) of one of 4 orientations (labels 0–3: 0°,
    45°, 90°, 135°) that leaves the image through a random border it crosses, with only its last 2 or 3 pixels
    inside; labels (n,)."""
    directions = ((0, 1), (1, 1), (1, 0), (1, -1))  # (dy, dx) along the bar, per class
    normals = ((-1, 0), (1, 0), (0, -1), (0, 1))  # outward normals of the top, bottom, left, right borders
    images = noise * torch.randn(n, 1, size, size, generator=g)
    labels = torch.randint(0, 4, (n,), generator=g)
    for i in range(n):
        dy, dx = directions[int(labels[i])]
        crossing = [e for e, (ny, nx) in enumerate(normals) if dy * ny + dx * nx != 0]
        edge = crossing[int(torch.randint(0, len(crossing), (1,), generator=g))]
        ny, nx = normals[edge]
        sign = 1 if dy * ny + dx * nx > 0 else -1  # sign·(dy, dx) points out through the chosen border
        depth = int(torch.randint(1, 3, (1,), generator=g))  # the innermost pixel's distance from the border
        pos = int(torch.randint(4, size - 4, (1,), generator=g))
        y0 = {0: depth, 1: size - 1 - depth}.get(edge, pos)
        x0 = {2: depth, 3: size - 1 - depth}.get(edge, pos)
        for t in range(_BAR):  # depth + 1 pixels inside, the rest beyond the border
            y, x = y0 + t * sign * dy, x0 + t * sign * dx
            if 0 <= y < size and 0 <= x < size:
                images[i, 0, y, x] += 1.5
    return images, labels


def _boundary_model(bc: str) -> nn.Module:
    layers: list[nn.Module] = []
    channels = 1
    for _ in range(4):
        layers += [nn.Conv2d(channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
        channels = 16
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    set_boundary(model, bc)
    return model


def _boundary_trial(seed: int, quick: bool) -> dict[str, dict[str, float]]:
    size, n_train, epochs = 24, (800 if quick else 3000), (2 if quick else 6)
    train_x, train_y = _bars(n_train, size, torch.Generator().manual_seed(seed))
    test_x, test_y = _bars(1000, size, torch.Generator().manual_seed(10_000 + seed))
    result = {}
    for arm in ("dirichlet", "neumann"):
        torch.manual_seed(seed)  # the same initial weights and the same batches in both arms
        model = _boundary_model(arm)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        order = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(n_train, generator=order).split(64):
                loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = float((model(test_x).argmax(1) == test_y).float().mean())
        result[arm] = {"test_accuracy": accuracy}
    return result


def _boundary_verdict(values, metrics) -> tuple[bool, str]:
    c = paired(dict(enumerate(values["neumann"])), dict(enumerate(values["dirichlet"])))
    held = bool(c.ci is not None and c.ci[0] > 0)
    interval = "" if c.ci is None else f", 95% CI [{100 * c.ci[0]:+.2f}, {100 * c.ci[1]:+.2f}]"
    if c.ci is not None and c.ci[0] <= 0 <= c.ci[1]:
        interval += ": the interval includes 0, so not resolved either way at this many seeds"
    return held, f"neumann − dirichlet test accuracy: {100 * c.mean:+.2f} points{interval} (predicted > 0)"
