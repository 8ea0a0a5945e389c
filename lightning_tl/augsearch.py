"""``lightning-tl augsearch``: search augmentation sub-policies with short proxy trainings.

The search space is AutoAugment's (Cubuk et al., CVPR 2019, arXiv:1805.09501): a policy is
``sub_policies`` sub-policies of ``ops_per_sub_policy`` operations, each an (operation, probability,
level) triple with probabilities on a 0.1 grid and levels 0-10. AutoAugment searched it with
reinforcement learning over 15,000 child trainings; here the method is random search with
successive halving (Jamieson & Talwalkar, AISTATS 2016; the basis of Hyperband, Li et al., JMLR 2018):
``trials`` random policies (plus the recipe's own policy as a baseline) each train the recipe's model
for ``steps`` steps on the train split and are scored on the held-out validation split; the best
``1/eta`` continue with ``eta`` times the budget, for ``rungs`` rounds. Each proxy training starts
from the recipe's seed, so candidates see the same data order and initialisation (common random
numbers). The winner is printed as a recipe-ready ``policy:`` spec that ``build_policy`` accepts.

Cost: about ``trials * steps * rungs`` training steps plus one validation pass per training.
"""

from __future__ import annotations

import argparse
import math
import resource
import tempfile
import warnings
from dataclasses import dataclass, field

import numpy as np

from lightning_tl.augment import parse_policy

#: AutoAugment's operations (Cubuk et al. 2019, table 1) available here (Cutout and SamplePairing are not).
SEARCH_OPS = (
    "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "Rotate", "AutoContrast", "Invert", "Equalize",
    "Solarize", "Posterize", "Contrast", "Color", "Brightness", "Sharpness",
)  # fmt: skip


@dataclass
class Trial:
    """One proxy training: its policy spec, step budget, rung and validation score."""

    index: int
    spec: str
    rung: int
    steps: int
    score: float = float("nan")


@dataclass
class SearchResult:
    """Best spec, every trial, and the CPU time the search took (this process and its children)."""

    best_spec: str
    best_score: float
    trials: list[Trial] = field(default_factory=list)
    cpu_minutes: float = 0.0

    def table(self) -> str:
        """Markdown table of the trials, best score first within each rung."""
        rows = ["| trial | rung | steps | val score | policy |", "|---|---|---|---|---|"]
        for t in sorted(self.trials, key=lambda t: (t.rung, -t.score)):
            rows.append(f"| {t.index} | {t.rung} | {t.steps} | {t.score:.4f} | `{t.spec}` |")
        return "\n".join(rows)


def random_policy(
    rng: np.random.Generator,
    sub_policies: int = 5,
    ops_per_sub_policy: int = 2,
    ops: tuple[str, ...] = SEARCH_OPS,
) -> str:
    """A random ``subpolicies:`` spec: ops uniform, probabilities on the 0.1 grid, levels 0-10."""
    subs = []
    for _ in range(sub_policies):
        items = [
            f"{ops[int(rng.integers(len(ops)))]}/{rng.integers(11) / 10:.1f}/{int(rng.integers(11))}"
            for _ in range(ops_per_sub_policy)
        ]
        subs.append("+".join(items))
    return "subpolicies:" + ";".join(subs)


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def proxy_score(config: str, spec: str, steps: int, metric: str, overrides: list[str]) -> float:
    """Train the recipe with ``policy=spec`` for ``steps`` steps, return ``metric`` on the val split."""
    from lightning_tl.cli import build_cli

    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "--config", config, *overrides, "--data.init_args.augment=lightning_tl.augment.SupervisedAugment",
            f"--data.init_args.augment.init_args.policy={spec}",
            f"--trainer.max_steps={steps}", "--trainer.max_epochs=-1", "--trainer.logger=false",
            "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--trainer.num_sanity_val_steps=0",
            "--trainer.check_val_every_n_epoch=1000000", f"--trainer.default_root_dir={tmp}",
        ]  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cli = build_cli(args, run=False)
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            results = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    if not results or metric not in results[0]:
        raise ValueError(
            f"the model logs no validation metric {metric!r}; it logs {list(results[0]) if results else []}"
        )
    return float(results[0][metric])


def augment_search(
    config: str,
    trials: int = 8,
    steps: int = 100,
    eta: int = 2,
    rungs: int = 2,
    sub_policies: int = 5,
    ops_per_sub_policy: int = 2,
    ops: tuple[str, ...] = SEARCH_OPS,
    seed: int = 0,
    metric: str = "val_acc",
    mode: str = "max",
    overrides: list[str] | None = None,
    baseline: str | None = "none",
) -> SearchResult:
    """Random search with successive halving over sub-policies (see the module docstring).

    Args:
        config: recipe YAML (its model, datamodule and trainer settings are used for every proxy run).
        trials: random policies in the first rung (the ``baseline`` spec is added as one more).
        steps: training steps per proxy run in the first rung; rung ``r`` trains ``steps * eta**r``.
        eta: keep the best ``ceil(n / eta)`` of each rung.
        rungs: number of rounds (1 = plain random search).
        sub_policies, ops_per_sub_policy, ops: the search space.
        seed: seed of the random policies (the proxy trainings use the recipe's seed).
        metric, mode: validation metric logged by the model and whether higher ("max") is better.
        overrides: extra ``--key=value`` arguments for every proxy run (e.g. a smaller train subset).
        baseline: a spec evaluated alongside the random ones (None: none).
    """
    if trials < 1 or steps < 1 or eta < 2 or rungs < 1 or sub_policies < 1 or ops_per_sub_policy < 1:
        raise ValueError(
            "need trials >= 1, steps >= 1, eta >= 2, rungs >= 1, sub_policies >= 1, "
            f"ops_per_sub_policy >= 1; "
            f"got {trials}, {steps}, {eta}, {rungs}, {sub_policies}, {ops_per_sub_policy}"
        )
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    for op in ops:
        parse_policy(f"subpolicies:{op}/0.5/5")  # unknown op names fail now, listing the valid ones
    if baseline is not None:
        parse_policy(baseline)
    start = _cpu_seconds()
    rng = np.random.default_rng(seed)
    specs = [random_policy(rng, sub_policies, ops_per_sub_policy, ops) for _ in range(trials)]
    if baseline is not None:
        specs.insert(0, baseline)
    sign = 1.0 if mode == "max" else -1.0
    done: list[Trial] = []
    for rung in range(rungs):
        budget = steps * eta**rung
        scored = []
        for spec in specs:
            trial = Trial(len(done), spec, rung, budget)
            trial.score = proxy_score(config, spec, budget, metric, overrides or [])
            print(
                f"[augsearch] rung {rung} trial {trial.index}: {metric}={trial.score:.4f} {spec}", flush=True
            )
            done.append(trial)
            scored.append(trial)
        scored.sort(key=lambda t: -sign * t.score)
        if len(scored) == 1:
            break
        specs = [t.spec for t in scored[: math.ceil(len(scored) / eta)]]
    last = max(t.rung for t in done)
    best = max((t for t in done if t.rung == last), key=lambda t: sign * t.score)
    return SearchResult(best.spec, best.score, done, (_cpu_seconds() - start) / 60)


def main(argv: list[str]) -> None:
    """``lightning-tl augsearch --config RECIPE [--trials 8] [--steps 100] ... [-- --key=value ...]``."""
    parser = argparse.ArgumentParser(prog="lightning-tl augsearch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="recipe YAML (supervised, with a validation split)")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=100, help="training steps per proxy run in rung 0")
    parser.add_argument("--eta", type=int, default=2)
    parser.add_argument("--rungs", type=int, default=2)
    parser.add_argument("--sub-policies", type=int, default=5)
    parser.add_argument("--ops-per-sub-policy", type=int, default=2)
    parser.add_argument("--ops", default=",".join(SEARCH_OPS), help="comma-separated operations to search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metric", default="val_acc")
    parser.add_argument("--mode", default="max", choices=("max", "min"))
    parser.add_argument("--baseline", default="none", help="spec evaluated alongside ('' for none)")
    parser.add_argument("--out", default=None, help="also write the trials table and the best spec here")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if not o.startswith("--") or "=" not in o]
    if bad:
        raise SystemExit(
            f"unrecognised arguments {bad}; recipe overrides must look like --data.init_args.x=value"
        )
    result = augment_search(
        args.config, args.trials, args.steps, args.eta, args.rungs,
        args.sub_policies, args.ops_per_sub_policy,
        tuple(o.strip() for o in args.ops.split(",") if o.strip()), args.seed, args.metric, args.mode,
        overrides, args.baseline or None,
    )  # fmt: skip
    report = (
        f"{result.table()}\n\nbest {args.metric}: {result.best_score:.4f}; search cost "
        f"{result.cpu_minutes:.1f} CPU-minutes\n\nrecipe-ready spec (data.init_args):\n"
        f'  policy: "{result.best_spec}"\n'
    )
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
