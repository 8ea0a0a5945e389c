"""MoCo method overhead: a MoCo training step against plain backbone steps on the same images.

Same setting as :mod:`benchmarks.simclr_overhead` (SimCLR): ResNet-18 with the small-input stem, two views
of N images, LARS-free SGD step here for both. The MoCo step is what ``MoCo.training_step`` does
(momentum update of backbone + head, query forward/backward on view 1, key forward without gradient
on view 2 with shuffle-BN, InfoNCE against a 65,536-key queue, enqueue); the SimCLR step is
``SimCLR``'s (both views forward/backward, NT-Xent). All steps are timed in turn, medians.
"""

from __future__ import annotations

import torch

from benchmarks._timing import interleaved_medians, markdown_table, median_seconds
from lightning_tl.losses import info_nce_loss, nt_xent_loss
from lightning_tl.modules import MoCo, SimCLR
from lightning_tl.nn import update_momentum


def run(batch: int = 128, size: int = 32, queue_size: int = 65536, repeats: int = 6) -> str:
    torch.manual_seed(0)
    moco = MoCo(backbone="resnet18", small_input=True, in_channels=3, queue_size=queue_size, lr=0.03)
    sym = MoCo(backbone="resnet18", small_input=True, in_channels=3, queue_size=queue_size, symmetric=True)
    sym.load_state_dict(moco.state_dict())
    simclr = SimCLR(backbone="resnet18", small_input=True, in_channels=3, lr=0.1)
    simclr.backbone.load_state_dict(moco.backbone.state_dict())
    views = [torch.randn(batch, 3, size, size) for _ in range(2)]
    labels = torch.zeros(batch, dtype=torch.long)
    both = torch.cat(views)
    opts = {
        name: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
        for name, m in (("moco", moco), ("sym", sym), ("simclr", simclr))
    }

    def plain(x: torch.Tensor) -> None:
        opts["simclr"].zero_grad(set_to_none=True)
        simclr.encode(x).pow(2).mean().backward()
        opts["simclr"].step()

    def module_step(name: str, module: MoCo | SimCLR) -> None:
        opts[name].zero_grad(set_to_none=True)
        module.training_step((views, labels), 0)["loss"].backward()
        opts[name].step()

    steps = [
        lambda: plain(both),
        lambda: plain(views[0]),
        lambda: module_step("moco", moco),
        lambda: module_step("sym", sym),
        lambda: module_step("simclr", simclr),
    ]
    for m in (moco, sym, simclr):
        m.log = lambda *args, **kwargs: None  # type: ignore[method-assign]  # no Trainer attached
    two_n, one_n, step, sym_step, simclr_step = interleaved_medians(steps, repeats, warmup=1)
    q, k = (torch.nn.functional.normalize(torch.randn(batch, 128), dim=1) for _ in range(2))
    q.requires_grad_(True)
    queue = moco.queue()
    loss_alone = median_seconds(lambda: info_nce_loss(q, k, queue, 0.2).backward(), repeats)
    ema_alone = median_seconds(lambda: update_momentum(moco.backbone, moco.key_backbone, 0.999), repeats)
    enqueue_alone = median_seconds(lambda: moco.queue.enqueue(k), repeats)
    z = torch.randn(2 * batch, 128, requires_grad=True)

    def nt_xent_alone() -> None:
        z1, z2 = z.chunk(2)
        nt_xent_loss(z1, z2, 0.5).backward()

    nt_alone = median_seconds(nt_xent_alone, repeats)

    def row(name: str, seconds: float) -> list[str]:
        ms = f"{seconds * 1000:.0f}" if seconds > 0.05 else f"{seconds * 1000:.2f}"
        return [name, ms, f"{seconds / two_n:.3f}", f"{seconds / one_n:.3f}"]

    rows = [
        row(f"backbone fwd+bwd+step, 2N = {2 * batch} images", two_n),
        row(f"backbone fwd+bwd+step, N = {batch} images (view 1)", one_n),
        row("MoCo step (N queries fwd+bwd, N keys fwd, queue)", step),
        row("MoCo step, symmetric loss", sym_step),
        row("SimCLR step (2N fwd+bwd, NT-Xent)", simclr_step),
        row(f"InfoNCE fwd+bwd alone, queue {queue_size}", loss_alone),
        row("momentum update of the backbone alone", ema_alone),
        row(f"enqueue {batch} keys alone", enqueue_alone),
        row("NT-Xent fwd+bwd alone", nt_alone),
    ]
    title = (
        f"MoCo vs SimCLR step cost: ResNet-18 (small-input stem), 2 views x {batch} images of {size} px, "
        f"queue {queue_size} x 128, SGD, {torch.get_num_threads()} threads; medians of {repeats} interleaved "
        f"rounds. MoCo / backbone(N) = {step / one_n:.3f}; MoCo / SimCLR = {step / simclr_step:.3f}\n\n"
    )
    header = ["step", "median ms", "ratio to backbone (2N)", "ratio to backbone (N)"]
    return title + markdown_table(header, rows)


if __name__ == "__main__":
    print(run())
