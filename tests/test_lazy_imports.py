"""``import lightning_tl`` stays light: timm, open_clip and huggingface_hub load only when used."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

HEAVY = ("open_clip", "huggingface_hub", "timm", "transformers")


def run(code: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


def test_import_and_torchvision_simclr_leave_the_hub_libraries_out() -> None:
    """What lightning itself imports does not count: with transformers installed, torchmetrics (imported
    by lightning) imports transformers and huggingface_hub; lightning_tl must add none of them."""
    out = run(
        f"""
        import sys
        import lightning, torchmetrics, torchvision
        before = {{m for m in {HEAVY!r} if m in sys.modules}}
        import lightning_tl
        from lightning_tl.modules import SimCLR
        SimCLR(backbone="resnet18", in_channels=1)
        from lightning_tl.backbones import create_backbone
        create_backbone("resnet18", small_input=True)
        print(sorted(m for m in {HEAVY!r} if m in sys.modules and m not in before))
        print("timm" in sys.modules, "open_clip" in sys.modules)
        """
    )
    assert out.splitlines() == ["[]", "False False"]


def test_timm_and_open_clip_load_when_used() -> None:
    out = run(
        """
        import sys
        from lightning_tl.backbones import create_backbone
        create_backbone("timm/resnet10t")
        print("timm" in sys.modules, "open_clip" in sys.modules)
        from lightning_tl.modules import CLIP
        CLIP(model_name="RN50")
        print("open_clip" in sys.modules)
        """
    )
    assert out.split() == ["True", "False", "True"]
