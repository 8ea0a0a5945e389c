"""Table (a): SimCLR training step time / plain backbone(+head) step time on the same 2N images.

The plain step is forward, a trivial loss (mean of squares), backward and the same optimizer step;
the SimCLR step adds what the method costs: NT-Xent over 2N x 2N similarities and its backward.
"""

from __future__ import annotations

import torch

from benchmarks._timing import interleaved_medians, markdown_table, median_seconds
from lightning_tl.losses import nt_xent_loss
from lightning_tl.modules import SimCLR
from lightning_tl.optim import create_optimizer


def run(batch: int = 128, size: int = 32, repeats: int = 10) -> str:
    torch.manual_seed(0)
    model = SimCLR(backbone="resnet18", small_input=True, in_channels=3, lr=0.1)
    views = [torch.randn(batch, 3, size, size) for _ in range(2)]
    x = torch.cat(views)
    optimizer = create_optimizer(model, "lars", lr=0.1, weight_decay=1e-6)

    def backbone_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model.encode(x).pow(2).mean().backward()
        optimizer.step()

    def backbone_head_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model.project(model.encode(x)).pow(2).mean().backward()
        optimizer.step()

    def simclr_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        z1, z2 = model.project(model.encode(x)).chunk(2)
        nt_xent_loss(z1, z2, 0.5).backward()
        optimizer.step()

    # interleaved, so slow drifts of the machine hit the three steps alike
    plain, with_head, method = interleaved_medians([backbone_step, backbone_head_step, simclr_step], repeats)
    z = torch.randn(2 * batch, 128, requires_grad=True)

    def nt_xent_alone() -> None:
        z1, z2 = z.chunk(2)
        nt_xent_loss(z1, z2, 0.5).backward()

    loss_alone = median_seconds(nt_xent_alone, repeats)
    rows = [
        ["backbone fwd+bwd+step", f"{plain * 1000:.0f}", "1.000"],
        ["backbone+head fwd+bwd+step", f"{with_head * 1000:.0f}", f"{with_head / plain:.3f}"],
        ["SimCLR step (+ NT-Xent)", f"{method * 1000:.0f}", f"{method / plain:.3f}"],
        ["NT-Xent forward+backward alone", f"{loss_alone * 1000:.1f}", f"{loss_alone / plain:.4f}"],
    ]
    title = (
        f"SimCLR method overhead: ResNet-18 (small-input stem), 2 x {batch} images of {size} px, "
        f"{torch.get_num_threads()} threads. SimCLR / backbone+head = {method / with_head:.3f}\n\n"
    )
    return title + markdown_table(["step", "median ms", "ratio to backbone"], rows)


if __name__ == "__main__":
    print(run())
