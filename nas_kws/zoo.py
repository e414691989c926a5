"""Reference runs shipped with the repository (the zoo): baselines trained with the comparison
recipe on the embedded default synthetic set, so a report always has them.

    zoo/index.yaml            the recipe (experiments/ file), its --set overrides, the seeds and
                              the models; what `nas-kws zoo build` trains
    zoo/<model>/seed<S>/      a packed run: config.yaml, features.yaml, classes.txt, metrics.json
                              (plus "reference": the train command and the data fingerprint) and
                              checkpoints/best.pt holding the weights and spec only
      quant/qat_w<W>a8/       a Brevitas QAT twin of those weights: metrics.json only (its
                              "reference" adds the digest of the weights it fine-tuned)
      export/model_{fp32,int8}.onnx.latency.json   ONNX latency at build time (first seed only)

`NAS_KWS_ZOO` points the package at another zoo folder. The data fingerprint names the set
(`synth-v<recipe version>-seed<S>-<size>-<task>`) and ends with 16 hex digits of
`WaveformStore.content_hash` (the decoded samples and labels of every split), so it is the same
on every machine holding the same set, unlike the store's key, which uses file dates. A packed
run counts only while its fingerprint is the current set's: `verify` re-evaluates every
checkpoint and compares its test accuracy (to the clip) with metrics.json. QAT twins ship no
weights (they would double the zoo's size), so `verify` checks that their fingerprint and base
weights are the packed run's, not their accuracy.
"""
from __future__ import annotations

import hashlib
import os
import shlex
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from nas_kws.config import (
    EXPERIMENTS_DIR,
    DataConfig,
    ExperimentConfig,
    check_keys,
    from_dict,
    load_config,
    parse_set_flags,
    to_dict,
)
from nas_kws.data.loader import BatchLoader
from nas_kws.data.synth import RECIPE_VERSION
from nas_kws.errors import NasKwsError
from nas_kws.evaluation import evaluate
from nas_kws.features import Frontend
from nas_kws.fileio import partial_dir, read_json, read_yaml, write_json
from nas_kws.rebuild import load_model
from nas_kws.runs import ExportDir, RunDir, latency_path

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"
WORK_DIR = Path("runs/zoo")   # where `zoo build` works by default: the folder packed commands name
INDEX_NAME = "index.yaml"
SLIM_KEYS = ("model", "model_spec", "features", "classes", "epoch", "best_valid_acc")
ACC_KEY = "test_best_acc"      # what `verify` recomputes
SETUP_FILES = ("config_path", "features_path", "classes_path")   # RunDir files copied as they are
QAT_ACT_BITS = 8                        # the twins' activations, as the demo's
LATENCY_KINDS = ("fp32", "int8")        # ONNX files of the float net whose latency is packed


class ZooError(NasKwsError):
    """A reference run that is stale, corrupt or does not reproduce its metrics."""


def zoo_root() -> Path:
    return Path(os.environ.get("NAS_KWS_ZOO") or ZOO_DIR)


@dataclass
class ZooIndex:
    recipe: str                     # an experiments/ file name, or a path
    seeds: list[int]
    models: list[str]
    overrides: list[str] = field(default_factory=list)   # `--set` pairs of the train command
    qat_weight_bits: list[int] = field(default_factory=list)   # QAT twins (8-bit activations)
    qat_epochs: int = 3                 # their fine-tuning, as `nas-kws demo`'s
    root: Path = field(default=Path(), init=False, repr=False)   # the zoo folder (not a key)

    def config(self, model: str, seed: int) -> ExperimentConfig:
        """The config `train_argv` gives a run: recipe + overrides + model and seed."""
        overrides = {**parse_set_flags(self.overrides), "model": model, "train.seed": seed}
        return load_config(ExperimentConfig, EXPERIMENTS_DIR / self.recipe, overrides)

    @property
    def data(self) -> DataConfig:
        return self.config(self.models[0], self.seeds[0]).data

    def train_argv(self, model: str, seed: int, run_dir: str | os.PathLike,
                   shown: bool = False) -> list[str]:
        """The run's training command; `shown`: as recorded and printed (the recipe named from
        the repository), else as executed from any working directory (absolute recipe path)."""
        recipe = EXPERIMENTS_DIR / self.recipe
        return ["train", "--model", model, "--config",
                _relative(recipe, EXPERIMENTS_DIR.parent) if shown else str(recipe),
                "--seed", str(seed), "--run_dir", str(run_dir), "--quiet", "--set",
                *self.overrides]

    def qat_argv(self, model: str, seed: int, bits: int, out: str | os.PathLike,
                 shown: bool = False) -> list[str]:
        """The twin's command: QAT of the packed run's weights, written to `out`; `shown`: the
        packed run named from the zoo folder's parent (zoo/NAME/seedS, whichever checkout or
        working directory built it), else its real path."""
        run = self.run(model, seed).path
        return ["quantize", "qat", _relative(run, self.root.parent) if shown else str(run),
                "--weight_bits", str(bits), "--act_bits", str(QAT_ACT_BITS), "--epochs",
                str(self.qat_epochs), "--out", str(out), "--quiet"]

    def run(self, model: str, seed: int) -> RunDir:
        return RunDir(self.root / model / f"seed{seed}")

    def work(self, model: str, seed: int, root: str | os.PathLike = WORK_DIR) -> Path:
        """Where `zoo build --work ROOT` trains a run; the packed commands name the default."""
        return Path(root) / model / f"seed{seed}"

    def qat_twin(self, model: str, seed: int, bits: int) -> RunDir:
        return self.run(model, seed).quant_run("qat", qat_tag(bits))


def _relative(path: Path, base: Path) -> str:
    """`path` relative to `base` when it lies inside it (both resolved), else as it is."""
    path, base = Path(path).resolve(), Path(base).resolve()
    return str(path.relative_to(base) if path.is_relative_to(base) else path)


def qat_tag(bits: int) -> str:
    return f"w{bits}a{QAT_ACT_BITS}"


def read_index(root: Path | None = None) -> ZooIndex:
    """The zoo's index.yaml, checked: unknown keys, models and a non-default data set are errors."""
    from nas_kws.models import list_models

    root = root or zoo_root()
    path = root / INDEX_NAME
    data = read_yaml(path, "zoo index (set NAS_KWS_ZOO to the zoo folder)")
    check_keys(data if isinstance(data, dict) else {},
               [f.name for f in fields(ZooIndex) if f.init], str(path))
    index = from_dict(ZooIndex, data, str(path))
    index.root = root
    unknown = [m for m in index.models if m not in list_models()]
    if unknown or not index.models or not index.seeds:
        raise ValueError(f"{path}: models {unknown or index.models} / seeds {index.seeds}: "
                         "expected registered models and at least one seed")
    if any(not 2 <= b <= 8 for b in index.qat_weight_bits) or index.qat_epochs < 1:
        raise ValueError(f"{path}: qat_weight_bits {index.qat_weight_bits} / qat_epochs "
                         f"{index.qat_epochs}: expected bit widths 2..8 and at least one epoch")
    cfg = index.data
    if cfg.dataset != "synth" or cfg.root is not None:
        raise ValueError(f"{path}: reference runs are for the embedded synthetic set, not "
                         f"dataset {cfg.dataset!r} at {cfg.root!r}")
    return index


def set_name(data: DataConfig) -> str:
    return f"synth-v{RECIPE_VERSION}-seed{data.seed}-{data.synth_size}-{data.task}"


def fingerprint(data: DataConfig, store) -> str:
    return f"{set_name(data)}-{store.content_hash()[:16]}"


def trained_on(run: RunDir) -> str:
    """The data fingerprint a packed run records ("" when it has none)."""
    return run.read_metrics().get("reference", {}).get("data_fingerprint", "")


def is_current(run: RunDir, data: DataConfig) -> bool:
    """Packed for the current recipe of the set (without hashing the data: `verify` does)."""
    return run.finished and trained_on(run).rpartition("-")[0] == set_name(data)


def measure_test_accuracy(run: RunDir, store) -> float:
    """Test accuracy of the run's best checkpoint on `store`, on the CPU."""
    model, features, classes = load_model(run.path)
    if list(classes) != list(store.classes):
        raise ValueError(f"{run.path}: classes {classes} differ from the data's {store.classes}")
    test = store.split("test")
    loader = BatchLoader(test.audio, test.labels, 500, split="test")
    cpu = torch.device("cpu")
    return evaluate(model, Frontend(features), loader, cpu, len(classes)).accuracy


def check_accuracy(run: RunDir, store) -> float:
    """The test accuracy, which must be metrics.json's to the clip; else a ZooError."""
    stored = run.read_metrics().get(ACC_KEY)
    measured = measure_test_accuracy(run, store)
    if stored is None or round(abs(measured - stored) * len(store.split("test"))) != 0:
        raise ZooError(f"{run.path}: test accuracy {measured:.4f} on the current set, but "
                       f"{ACC_KEY} {stored} in {run.metrics_path.name}")
    return measured


def weights_digest(run: RunDir) -> str:
    """16 hex digits of SHA-256 over the best checkpoint's weights: what ties a QAT twin to the
    float weights it fine-tuned."""
    digest = hashlib.sha256()
    for key, tensor in sorted(run.load_checkpoint("best")["model"].items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def check_qat(twin: RunDir, current: str, base: str) -> float:
    """A packed twin's test accuracy, if it was fine-tuned from weights `base` on the set
    `current` and its metrics are whole; else a ZooError naming its metrics.json."""
    metrics = twin.read_metrics()
    reference = metrics.get("reference", {})
    made_from = (reference.get("data_fingerprint"), reference.get("base_weights"))
    if made_from != (current, base):
        raise ZooError(f"{twin.metrics_path}: stale QAT result, fine-tuned on the set "
                       f"{made_from[0]} from weights {made_from[1]}, but the packed run has "
                       f"weights {base} on the set {current}; `nas-kws zoo build` of the model "
                       "fine-tunes it again")
    acc, quant = metrics.get(ACC_KEY), metrics.get("model", {}).get("quant", {})
    if not isinstance(acc, float) or not 0 <= acc <= 1 or "weight_bits" not in quant:
        raise ZooError(f"{twin.metrics_path}: corrupt QAT result, expected {ACC_KEY} in [0, 1] "
                       "and the twin's model spec with its quant bits")
    return acc


def packed_latency(run: RunDir) -> dict[str, float]:
    """Median ms per packed ONNX latency file of a run; a ZooError names an unreadable one."""
    found = {}
    for kind in LATENCY_KINDS:
        path = latency_path(run.export.onnx_path(kind))
        if path.is_file():
            median = read_json(path, "latency file").get("median_ms")
            if not isinstance(median, float) or median <= 0:
                raise ZooError(f"{path}: corrupt latency file, expected a positive median_ms")
            found[kind] = median
    return found


@contextmanager
def _named(label: str) -> Iterator[None]:
    """Any expected error inside becomes a one-line ZooError starting with `label`."""
    try:
        yield
    except (NasKwsError, ValueError, OSError) as err:
        raise ZooError(f"{label}: {err}") from None


def check_derived(run: RunDir, current: str) -> tuple[dict[str, float], dict[str, float]]:
    """({twin folder: test accuracy}, {kind: latency ms}) of a packed run trained on the set
    `current`, every QAT twin and latency file checked."""
    base = weights_digest(run)
    return ({twin.path.name: check_qat(twin, current, base) for twin in run.quant_runs()},
            packed_latency(run))


def verify_run(index: ZooIndex, model: str, seed: int, store, current: str) -> str:
    """Check one packed run against the current set (fingerprint `current`): its accuracy, its
    QAT twins and latency files; returns what was checked, or a ZooError names the run and
    what is wrong."""
    run = index.run(model, seed)
    with _named(f"reference run {model}/seed{seed}"):
        recorded = trained_on(run)
        if recorded != current:
            raise ZooError(f"{run.path}: stale, trained on the set {recorded or '(none recorded)'}"
                           f" but the current set is {current}; rebuild it with "
                           f"`nas-kws zoo build {model}`")
        checked = [f"test acc {check_accuracy(run, store):.4f} as stored"]
        qat, latency = check_derived(run, current)
        checked += [f"{name} {acc:.4f}" for name, acc in qat.items()]
        checked += [f"{kind} {ms:.3f} ms" for kind, ms in latency.items()]
        return ", ".join(checked)


def pack(index: ZooIndex, model: str, seed: int, work: RunDir, store, current: str) -> float:
    """Copy a finished training of the recorded command into the zoo, slim: the best checkpoint's
    weights and spec, the setup files and metrics.json with the command and data fingerprint.
    The run must hold the recipe's config and reproduce its test accuracy on `store`."""
    expected = to_dict(index.config(model, seed))
    found = to_dict(work.experiment())     # keys added since it ran read as their defaults
    differ = [key for key in expected if found.get(key) != expected[key]]
    if differ:
        raise ZooError(f"{work.config_path}: config section(s) {differ} differ from the zoo "
                       f"recipe's ({index.recipe} with {index.overrides}, seed {seed})")
    acc = check_accuracy(work, store)
    metrics = work.read_metrics()
    metrics["reference"] = {
        "command": shlex.join(["nas-kws", *index.train_argv(model, seed, index.work(model, seed),
                                                            shown=True)]),
        "data_fingerprint": current}
    state = work.load_checkpoint("best")
    dest = index.run(model, seed)
    dest.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = RunDir(partial_dir(dest.path))
    try:
        tmp.save_checkpoint("best", {key: state[key] for key in SLIM_KEYS})
        for name in SETUP_FILES:
            shutil.copyfile(getattr(work, name), getattr(tmp, name))
        tmp.write_metrics(metrics)
        if dest.path.exists():   # a stale packing: swap, then remove it
            old = partial_dir(dest.path)
            os.replace(dest.path, old / "old")
            os.replace(tmp.path, dest.path)
            shutil.rmtree(old)
        else:
            os.replace(tmp.path, dest.path)
    except BaseException:
        shutil.rmtree(tmp.path, ignore_errors=True)
        raise
    return acc


def pack_qat(index: ZooIndex, model: str, seed: int, bits: int, twin: RunDir, work: RunDir,
              current: str) -> float:
    """Pack the metrics of a finished QAT twin of the packed run (`twin`, run with
    `index.qat_argv`) with its command, the data fingerprint and the packed weights' digest;
    a training in `work` must have those weights."""
    base = weights_digest(index.run(model, seed))
    if work.has_checkpoint("best") and weights_digest(work) != base:
        raise ZooError(f"{work.path}: its best checkpoint is not the packed run's, so "
                       f"{twin.path} was not fine-tuned from the packed weights")
    metrics = twin.read_metrics()
    quant = metrics.get("model", {}).get("quant", {})
    recipe = (quant.get("weight_bits"), quant.get("act_bits"), twin.experiment().train.epochs)
    if recipe != (bits, QAT_ACT_BITS, index.qat_epochs):
        raise ZooError(f"{twin.path}: weight / activation bits and epochs {recipe}, but the zoo's "
                       f"QAT recipe is {(bits, QAT_ACT_BITS, index.qat_epochs)}")
    out = RunDir(index.work(model, seed)).quant_run("qat", qat_tag(bits)).path
    metrics["reference"] = {
        "command": shlex.join(["nas-kws", *index.qat_argv(model, seed, bits, out, shown=True)]),
        "data_fingerprint": current, "base_weights": base}
    dest = index.qat_twin(model, seed, bits)
    dest.path.mkdir(parents=True, exist_ok=True)
    dest.write_metrics(metrics)
    return check_qat(dest, current, base)


def pack_latency(index: ZooIndex, model: str, seed: int, exports: ExportDir) -> dict[str, float]:
    """Copy the latency files of the packed run's ONNX exports in `exports` into the zoo."""
    run = index.run(model, seed)
    for kind in LATENCY_KINDS:
        dest = run.export.onnx_path(kind)
        latency = read_json(latency_path(exports.onnx_path(kind)), "latency file")
        write_json(latency_path(dest), {**latency, "model": str(dest.relative_to(run.path))})
    return packed_latency(run)


def reference_runs(name: str, like_run: str | os.PathLike) -> tuple[list[Path], str]:
    """(packed runs, note) of model `name` for a report whose first run is `like_run`: the zoo's
    current runs when that run was trained on the zoo's data, else none. The note says what the
    runs are, or why a baseline the zoo lists has none."""
    run = RunDir(like_run)
    root = zoo_root()
    if not run.config_path.is_file() or not (root / INDEX_NAME).is_file():
        return [], ""
    index = read_index(root)
    try:
        data = from_dict(DataConfig, run.read_config().get("data"), str(run.config_path))
    except ValueError:      # not a training run's config
        return [], ""
    if name not in index.models or to_dict(data) != to_dict(index.data):
        return [], ""
    seeds = [s for s in index.seeds if is_current(index.run(name, s), index.data)]
    if not seeds:
        return [], f"; no current reference run (build it: nas-kws zoo build {name})"
    note = (f"reference runs (zoo), mean +- std over seeds {_seeds_text(seeds)}"
            if len(seeds) > 1 else f"reference run (zoo), seed {seeds[0]}")
    return [index.run(name, s).path for s in seeds], note + _derived_note(index, name, seeds)


def _seeds_text(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds))


def _derived_note(index: ZooIndex, name: str, seeds: list[int]) -> str:
    """What the reference rows' QAT and latency cells come from, each packed file checked
    (a stale or corrupt one is a ZooError naming it)."""
    qat_seeds, timed = [], []
    for seed in seeds:
        run = index.run(name, seed)
        with _named(f"reference run {name}/seed{seed}"):
            qat, latency = check_derived(run, trained_on(run))
        qat_seeds += [seed] if qat else []
        timed += [seed] if latency else []
    note = ""
    if qat_seeds != seeds:
        note = (f"; QAT over seeds {_seeds_text(qat_seeds)}" if qat_seeds else
                f"; no QAT packed (nas-kws zoo build {name})")
    if timed:
        return note + f"; latency from the zoo's build machine (seed {_seeds_text(timed)})"
    return note + "; no latency packed"


def describe_model(index: ZooIndex, model: str) -> dict[str, Any]:
    """What `zoo list` shows of one model: its packed seeds (current or stale) and accuracies."""
    runs = {s: index.run(model, s) for s in index.seeds}
    built = [s for s, r in runs.items() if r.finished]
    current = [s for s in built if is_current(runs[s], index.data)]
    metrics = [runs[s].read_metrics() for s in current]
    qat = {qat_tag(b): [twin.read_metrics()[ACC_KEY] for s in current
                        if (twin := index.qat_twin(model, s, b)).finished]
           for b in index.qat_weight_bits}
    latency = [lat["int8"] for s in current if "int8" in (lat := packed_latency(runs[s]))]
    return {"model": model, "built": built, "current": current,
            "accs": [m[ACC_KEY] for m in metrics], "qat": qat, "int8_ms": latency,
            "params": metrics[0]["params"] if metrics else None,
            "macs": metrics[0]["macs"] if metrics else None}
