"""The training loop (weights only), plain PyTorch, readable top to bottom.

`fit` trains any model on a waveform store; augmentation and features run on whole batches on
the training device. Every epoch ends with atomic `last` (and `best`) checkpoints holding the
model, optimizer, scheduler and RNG states, so `resume` continues bit-for-bit on CPU.
"""
from __future__ import annotations

import math
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from nas_kws import distributed
from nas_kws.config import ExperimentConfig, TrainConfig, to_dict
from nas_kws.data.loader import open_dataset
from nas_kws.data.pipeline import Pipeline
from nas_kws.device import pick_device, rng_state, seed_everything, set_rng_state
from nas_kws.errors import NasKwsError
from nas_kws.evaluation import EvalResult, confusion_figure, evaluate, save_confusion_png
from nas_kws.fileio import write_yaml
from nas_kws.runs import RunDir


class NonFiniteLossError(NasKwsError):
    """The loss went NaN or infinite: the config needs a change (e.g. a lower lr), so the job
    stops before the update and the command line reports it in one line."""


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The weight optimizer for `params` (a supernet passes its weights only, not alpha)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"train.optimizer: expected sgd or adam, got {cfg.optimizer!r}")


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """The learning-rate multiplier at `step`: linear warm-up, then cosine to 0 at total_steps.
    Training and the supernet's weight steps both follow it."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, span) / span))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up for `warmup_epochs`, then cosine to 0, stepped every batch."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = max(cfg.epochs * steps_per_epoch, warmup + 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, warmup, total))


def steps_per_epoch(n_batches: int, cfg: TrainConfig) -> int:
    """Batches per epoch: the loader's, or fewer when `max_steps_per_epoch` caps it."""
    return min(cfg.max_steps_per_epoch, n_batches) if cfg.max_steps_per_epoch else n_batches


def stops_after(epoch: int, stop_after_epoch: int | None, total: int) -> bool:
    """A time-boxed job ends after `epoch` (its checkpoint written) when epochs remain."""
    return stop_after_epoch is not None and epoch >= stop_after_epoch and epoch + 1 < total


def check_finite(loss: torch.Tensor, where: str) -> None:
    """A non-finite loss stops the job before the update, naming `where`."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"{where}: loss is {loss.item()}; stopped before the update")


def train_step(model: nn.Module, feats: torch.Tensor, labels: torch.Tensor,
               optimizer: torch.optim.Optimizer, cfg: TrainConfig, where: str,
               scaler: torch.amp.GradScaler | None = None,
               soft_targets: torch.Tensor | None = None,
               after_backward: Callable[[], None] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One weight update; returns (loss, logits), both detached. `soft_targets` (probabilities)
    replace the labels, for in-place distillation inside a supernet. `after_backward` runs
    between the backward pass and the update (a supernet averages its gradients over the
    processes there). A non-finite loss stops before the update, naming `where`."""
    use_amp = scaler is not None and scaler.is_enabled()
    with torch.autocast(feats.device.type, dtype=torch.float16, enabled=use_amp):
        logits = model(feats).float()
    if soft_targets is None:
        loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
    else:
        loss = F.cross_entropy(logits, soft_targets)
    check_finite(loss, where)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        if after_backward:
            after_backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        if after_backward:
            after_backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.detach(), logits.detach()


def prefetched(batches: Iterable[Any], prepare: Callable[[Any], Any]) -> Iterator[Any]:
    """`prepare(batch)` for each batch, computed in a helper thread one batch ahead, so
    augmentation and features overlap the previous weight step. The helper prepares the batches
    in order, so a seeded generator inside `prepare` draws exactly as without the thread."""
    threads = torch.get_num_threads()

    def run(batch: Any) -> Any:
        torch.set_num_threads(threads)  # a new thread starts with the library's default
        return prepare(batch)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        ahead = None
        for batch in batches:
            following = pool.submit(run, batch)
            if ahead is not None:
                yield ahead.result()
            ahead = following
        if ahead is not None:
            yield ahead.result()


def train_batches(pipe: Pipeline, loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
                  steps: int, g: torch.Generator, memory_format: torch.memory_format,
                  prefetch: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The first `steps` batches of `loader` augmented and turned into features (drawing from
    `g`), in `memory_format`; with `prefetch`, one batch ahead in a helper thread."""
    def prepare(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        feats, labels = pipe.train_batch(*batch, g)
        return feats.contiguous(memory_format=memory_format), labels

    batches = islice(loader, steps)
    return prefetched(batches, prepare) if prefetch else map(prepare, batches)


def train_epoch(replicas: nn.Module, pipe: Pipeline, optimizer: torch.optim.Optimizer,
                scheduler, t: TrainConfig, epoch: int,
                memory_format: torch.memory_format = torch.contiguous_format,
                scaler: torch.amp.GradScaler | None = None, progress: bool = False,
                max_steps: int | None = None) -> tuple[float, int, int]:
    """One epoch of weight steps (at most `max_steps`, for benchmarks); returns (summed loss,
    correct, clips) of this process. The sums stay on the device until the epoch ends (no host
    sync per step); the loss sum is kept in float64, as a Python float would be."""
    replicas.train()
    pipe.train_loader.set_epoch(epoch)
    g = pipe.generator(epoch)
    steps = steps_per_epoch(len(pipe.train_loader), t)
    steps = min(steps, max_steps) if max_steps else steps

    batches = train_batches(pipe, pipe.train_loader, steps, g, memory_format, t.prefetch)
    loss_sum = torch.zeros((), dtype=torch.float64, device=pipe.device)
    correct = torch.zeros((), dtype=torch.int64, device=pipe.device)
    seen = 0
    bar = tqdm(batches, total=steps, desc=f"epoch {epoch}", leave=False, disable=not progress)
    for step, (feats, labels) in enumerate(bar):
        loss, logits = train_step(replicas, feats, labels, optimizer, t,
                                  f"epoch {epoch} step {step}", scaler)
        scheduler.step()
        loss_sum += loss.double() * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
        if progress:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return loss_sum.item(), int(correct.item()), seen

def _log_epoch(writer, epoch: int, row: dict[str, float], valid: EvalResult,
               classes: list[str]) -> None:
    for key, value in row.items():
        if key != "epoch":
            writer.add_scalar(key.replace("_", "/", 1), value, epoch)
    for name, acc in zip(classes, valid.per_class):
        if not math.isnan(acc):
            writer.add_scalar(f"valid_class/{name}", acc, epoch)


def fit(model: nn.Module, cfg: ExperimentConfig, run_dir: str | Path, resume: bool = False,
        store=None, progress: bool = True, stop_after_epoch: int | None = None) -> dict[str, Any]:
    """Train `model` as `cfg` says, in `run_dir` (locked meanwhile); returns (and writes)
    metrics.json.

    `stop_after_epoch` ends the job after that epoch with its checkpoint written, for time-boxed
    machines; `resume=True` then continues exactly where it stopped.

    In a torchrun job of several processes (nas_kws.distributed) each trains its part of every
    global batch through DistributedDataParallel; rank 0 alone validates, writes the run and
    returns the metrics (the others return {}).
    """
    with RunDir(run_dir).locked():
        return _fit(model, cfg, run_dir, resume, store, progress, stop_after_epoch)


def _fit(model: nn.Module, cfg: ExperimentConfig, run_dir: str | Path, resume: bool,
         store, progress: bool, stop_after_epoch: int | None) -> dict[str, Any]:
    from torch.utils.tensorboard import SummaryWriter

    t = cfg.train
    run = RunDir(run_dir)
    main = distributed.is_main()
    progress = progress and main
    device = pick_device(t.device)
    store = store if store is not None else open_dataset(cfg.data, progress=progress)
    features = model.feature_config
    pipe = Pipeline(store, cfg, features, device, distributed.shard())
    if getattr(model, "num_classes", len(pipe.classes)) != len(pipe.classes):
        raise ValueError(f"model has {model.num_classes} outputs but the data has "
                         f"{len(pipe.classes)} classes {pipe.classes}")
    memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    optimizer = build_optimizer(model.parameters(), t)
    scheduler = build_scheduler(optimizer, t, len(pipe.train_loader))
    use_amp = t.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    valid_loader = pipe.loader("valid", t.eval_batch_size)

    start_epoch, best_acc, history = 0, -1.0, []
    if resume:
        state = run.resume_checkpoint()
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(distributed.own_rng_state(state))
        start_epoch, best_acc = state["epoch"] + 1, state["best_valid_acc"]
        history = state["history"]
    else:
        distributed.seed_ranks(t.seed)
        if main:
            run.write_setup(to_dict(cfg), features, pipe.classes)
    replicas = distributed.wrap(model)
    rank_rngs: dict[str, Any] = {}      # every process's RNG states, for a job of several

    def checkpoint(epoch: int) -> dict[str, Any]:
        return {"model": model.state_dict(), "model_spec": model.spec,
                "features": features.to_dict(), "classes": pipe.classes, "epoch": epoch,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng": rng_state(), **rank_rngs,
                "best_valid_acc": best_acc, "history": history, "config": to_dict(cfg)}

    if t.select_start and start_epoch == 0 and main:
        # Fine-tuning a quantized or compressed net must not select weights worse than its start.
        best_acc = evaluate(model, pipe.frontend, valid_loader, device, len(pipe.classes)).accuracy
        run.save_checkpoint("best", checkpoint(-1))

    def last_good() -> str:
        path = run.checkpoint_path("last")
        return str(path) if path.is_file() else "none yet, the run stopped in its first epoch"

    writer = SummaryWriter(str(run.tb_dir)) if main else None
    started = time.time()
    epochs = tqdm(range(start_epoch, t.epochs), desc="epochs", disable=not progress,
                  initial=start_epoch, total=t.epochs)
    for epoch in epochs:
        try:
            loss_sum, correct, seen = train_epoch(replicas, pipe, optimizer, scheduler, t, epoch,
                                                  memory_format, scaler, progress)
        except NonFiniteLossError as err:
            raise NonFiniteLossError(f"{err}; last good checkpoint: {last_good()}") from None
        distributed.check_replicas(model, f"epoch {epoch}")
        loss_sum, correct, seen = distributed.sum_over_ranks([loss_sum, correct, seen])
        rank_rngs = distributed.rank_rng_states()
        if main:
            valid = evaluate(model, pipe.frontend, valid_loader, device, len(pipe.classes))
            row = {"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                   "valid_loss": valid.loss, "valid_acc": valid.accuracy,
                   "lr": optimizer.param_groups[0]["lr"]}
            history.append(row)
            _log_epoch(writer, epoch, row, valid, pipe.classes)
            epochs.set_postfix(train_acc=f"{row['train_acc']:.3f}",
                               valid_acc=f"{valid.accuracy:.3f}")
            if valid.accuracy > best_acc:
                best_acc = valid.accuracy
                run.save_checkpoint("best", checkpoint(epoch))
            run.save_checkpoint("last", checkpoint(epoch))
        if stops_after(epoch, stop_after_epoch, t.epochs):
            if writer:
                writer.close()
            return {"stopped_after_epoch": epoch}
    if not main:
        return {}

    metrics = final_metrics(model, run, pipe, device, history, writer)
    metrics["train_seconds"] = time.time() - started
    if distributed.world_size() > 1:
        metrics["processes"] = distributed.world_size()
    writer.close()
    run.write_metrics(metrics)
    return metrics


def final_metrics(model: nn.Module, run: RunDir, pipe: Pipeline, device: torch.device,
                  history: list[dict], writer) -> dict[str, Any]:
    """Test accuracy of the best-validation checkpoint and of the last epoch, plus the profile."""
    from nas_kws.profiling import profile_model

    test_splits = [s for s in ("test", "official_test") if s in pipe.store.splits]
    best_state = run.load_checkpoint("best")
    metrics: dict[str, Any] = {"model": model.spec, "classes": pipe.classes,
                               "epochs": len(history), "best_epoch": best_state["epoch"],
                               "best_valid_acc": best_state["best_valid_acc"]}
    for which in ("last", "best"):
        model.load_state_dict(run.load_checkpoint(which)["model"])
        for split in test_splits:
            result = evaluate(model, pipe.frontend, pipe.loader(split, 500), device,
                              len(pipe.classes))
            key = f"{split}_{which}"
            metrics[f"{key}_acc"] = result.accuracy
            metrics[f"{key}_detail"] = result.summary(pipe.classes)
            if which == "best":
                save_confusion_png(run.confusion_path(split), result.confusion,
                                   pipe.classes, f"{split}, best checkpoint")
                writer.add_figure(f"confusion/{split}", confusion_figure(result.confusion,
                                                                         pipe.classes, split))
    prof = profile_model(model.cpu().eval())
    metrics.update(params=prof.params, macs=prof.macs, history=history)
    return metrics


def train_experiment(cfg: ExperimentConfig, run_dir: str | Path, resume: bool = False,
                     progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Create the model from the config and fit it, once per seed (mean +- std when several).
    A fresh run refuses a folder holding a started or finished run unless `overwrite`, which
    first removes what that run wrote."""
    run = RunDir(run_dir)
    store = open_dataset(cfg.data, progress=progress)
    with run.locked():
        if not resume:
            run.make_fresh(overwrite)
        return _train_seeds(cfg, run, resume, store, progress)


def _train_seeds(cfg: ExperimentConfig, run: RunDir, resume: bool, store,
                 progress: bool) -> dict[str, Any]:
    from nas_kws.models import create_model

    seeds = [cfg.train.seed + k for k in range(cfg.train.seeds)]
    if len(seeds) > 1 and not resume and distributed.is_main():
        write_yaml(run.config_path, to_dict(cfg))  # what `--resume` reads; marks the run started
    results = []
    for seed in seeds:
        seed_cfg = replace(cfg, train=replace(cfg.train, seed=seed, seeds=1))
        seed_run = run if len(seeds) == 1 else run.seed_run(seed)
        if resume and seed_run.finished:
            results.append(seed_run.read_metrics())
            continue
        seed_everything(seed)
        model = create_model(cfg.model, num_classes=len(store.classes),
                             features=cfg.features or None, **cfg.model_kwargs)
        results.append(fit(model, seed_cfg, seed_run.path,
                           resume=resume and seed_run.can_resume, store=store,
                           progress=progress))
    if len(seeds) == 1 or not distributed.is_main():
        return results[0]
    summary = {"seeds": seeds, "runs": [f"seed{s}" for s in seeds],
               "params": results[0]["params"], "macs": results[0]["macs"]}
    for key in [k for k in results[0] if k.endswith("_acc")]:
        values = [r[key] for r in results]
        summary[f"{key}_mean"] = statistics.mean(values)
        summary[f"{key}_std"] = statistics.stdev(values)
    run.write_metrics(summary)
    return summary
