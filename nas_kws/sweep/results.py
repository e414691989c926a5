"""`nas-kws sweep SWEEP.yaml --report`: what a study found, into <sweep folder>/report/:

    trials.csv        every trial: state, sampled values, objectives, test accuracy, folder
    pareto.csv        the Pareto front (the best trial of a one-objective study)
    importances.csv   Optuna's parameter importances, per objective
    pareto.png        validation accuracy vs MACs (or size): all trials, the front, --with runs
    report.md         the tables, and each Pareto net's run directory with its next commands
    compare/          `nas-kws compare` of the Pareto nets and the --with runs (test accuracy)

Selection is by validation accuracy only; test accuracy is listed for the record.
`nas-kws compare SWEEP_FOLDER` compares the Pareto nets of a journal sweep (`expand_sweeps`).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from nas_kws.fileio import write_csv, write_text
from nas_kws.plots import pyplot, save_figure
from nas_kws.report import compare, md_table
from nas_kws.report_rows import read_run
from nas_kws.runs import RunDir
from nas_kws.sweep.config import SweepConfig
from nas_kws.sweep.pipeline import DIR_ATTR, ERROR_ATTR
from nas_kws.sweep.storage import journal_path

MEASURES = ["valid_acc", "MACs", "params", "size_KiB", "test_acc", "seconds"]
FILES = ("trials.csv", "pareto.csv", "importances.csv", "pareto.png", "report.md")


def _value(value: Any) -> Any:
    """Sampled values as text in tables (a float there would read as an accuracy)."""
    return f"{value:.4g}" if isinstance(value, float) else value


def trial_row(cfg: SweepConfig, trial: FrozenTrial) -> dict[str, Any]:
    a = trial.user_attrs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry_of = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    size = a.get("size_bits")
    return {"trial": trial.number, "state": trial.state.name.lower(), "retry_of": retry_of,
            **{p.name: _value(trial.params.get(p.name)) for p in cfg.params},
            "valid_acc": a.get("valid_acc"), "MACs": a.get("macs"), "params": a.get("params"),
            "size_KiB": None if size is None else size / 8 / 1024,
            "test_acc": a.get("test_acc"),
            "seconds": None if a.get("seconds") is None else round(a["seconds"]),
            "worker": a.get("worker"), "run": a.get("net_run") or a.get(DIR_ATTR),
            "error": a.get(ERROR_ATTR)}


def importances(cfg: SweepConfig, study: optuna.Study) -> tuple[list[dict[str, Any]], str]:
    """Optuna's importances per objective (default evaluator), or why there are none."""
    rows: dict[str, dict[str, Any]] = {p.name: {"parameter": p.name} for p in cfg.params}
    for i, (objective, direction) in enumerate(zip(cfg.study.objectives, cfg.directions)):
        sign = -1 if direction == "maximize" else 1   # the evaluator looks for low targets
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)   # e.g. too few trials to tell
                found = optuna.importance.get_param_importances(
                    study, target=lambda t, i=i, sign=sign: sign * t.values[i])
        except (ValueError, RuntimeError) as err:
            return [], f"no importances yet: {err}"
        for name, value in found.items():
            rows[name][objective] = round(value, 4)
    return list(rows.values()), ""


# the x axis of the front's plot: the sweep's cost objective, MACs when it has none
COST_AXES = {"macs": ("MACs per clip", lambda m: m["macs"]),
             "size_bits": ("model size (KiB)", lambda m: m["size_bits"] / 8 / 1024)}


def plot_front(cfg: SweepConfig, trials: list[FrozenTrial], front: list[FrozenTrial],
               baselines: list[str], path: Path) -> Path:
    """Validation accuracy against cost: every complete trial, the front, the --with runs."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cost = next((o for o in cfg.study.objectives if o in COST_AXES), "macs")
    xlabel, x_of = COST_AXES[cost]

    def points(ts: list[FrozenTrial]) -> tuple[list[float], list[float]]:
        ts = sorted(ts, key=lambda t: x_of(t.user_attrs))
        return [x_of(t.user_attrs) for t in ts], [100 * t.user_attrs["valid_acc"] for t in ts]

    ax.scatter(*points(trials), color="0.6", s=18, label="trials")
    ax.plot(*points(front), marker="*", markersize=11, color="tab:red",
            label="Pareto front" if len(cfg.study.objectives) > 1 else "best trial")
    family = []
    for run in baselines:
        metrics = RunDir(run).read_metrics()
        acc = metrics.get("best_valid_acc", metrics.get("best_valid_acc_mean"))
        if acc is not None and metrics.get("macs"):
            measures = {"macs": metrics["macs"], "size_bits": 32 * metrics["params"]}
            family.append((x_of(measures), 100 * acc, read_run(run)[1].label))
    if family:
        family.sort()
        ax.plot([f[0] for f in family], [f[1] for f in family], marker="o", label="--with runs")
        for macs, acc, label in family:
            ax.annotate(label, (macs, acc), fontsize=7, textcoords="offset points",
                        xytext=(4, -10))
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"sweep {cfg.name}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def next_commands(cfg: SweepConfig, trial: FrozenTrial) -> list[str]:
    """Where a Pareto net lives and what to run on it next."""
    a = trial.user_attrs
    float_run, net_run = cfg.out / a["float_run"], cfg.out / a["net_run"]
    lines = [f"- trial {trial.number}: `{net_run}`"]
    if net_run == float_run:
        lines.append(f"  - `nas-kws quantize qat {float_run} --weight_bits 8 --act_bits 8`")
    lines.append(f"  - `nas-kws export {net_run}{' --int8' if net_run != float_run else ''}`")
    return lines


def write_report(cfg: SweepConfig, study: optuna.Study, where: str,
                 baselines: list[str] | None = None) -> Path:
    """The report of `study` into <sweep folder>/report; `baselines`: finished runs (e.g.
    BC-ResNet trainings on the same data) to draw and compare against."""
    out = cfg.out / "report"
    baselines = [str(b) for b in baselines or []]
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    front = sorted(study.best_trials, key=lambda t: t.user_attrs["macs"]) if complete else []
    rows = [trial_row(cfg, t) for t in trials]
    columns = list(rows[0]) if rows else ["trial", "state"]
    write_csv(out / "trials.csv", columns, rows)
    pareto = [trial_row(cfg, t) for t in front]
    write_csv(out / "pareto.csv", columns, pareto)
    imp_rows, imp_note = importances(cfg, study)
    write_csv(out / "importances.csv", ["parameter", *cfg.study.objectives], imp_rows)
    states = {s: sum(t.state.name.lower() == s for t in trials)
              for s in ("complete", "pruned", "fail", "running", "waiting")}
    lines = [f"# Sweep {cfg.name} (study {study.study_name})", "",
             f"Storage: {where}. Trials: "
             + ", ".join(f"{n} {s}" for s, n in states.items() if n) + ". Objectives: "
             + ", ".join(f"{o} ({d})" for o, d in zip(cfg.study.objectives, cfg.directions))
             + ". Sampler " + cfg.study.sampler + ", pruner " + cfg.study.pruner + ".", "",
             "## Pareto front" if len(cfg.study.objectives) > 1 else "## Best trial", "",
             "Accuracies in %; selection by validation accuracy, test accuracy for the record "
             "only.", "",
             *md_table(["trial", *(p.name for p in cfg.params), *MEASURES, "run"], pareto)]
    if front:
        plot_front(cfg, complete, front, baselines, out / "pareto.png")
        lines += ["", "![validation accuracy vs cost](pareto.png)", "",
                  "Run directories, ready for quantization and export:", ""]
        lines += [line for t in front for line in next_commands(cfg, t)]
        runs = [str(cfg.out / t.user_attrs["net_run"]) for t in front
                if RunDir(cfg.out / t.user_attrs["net_run"]).finished] + baselines
        if runs:
            compare(runs, out / "compare")
            lines += ["", "Test accuracy of these nets beside the `--with` runs: "
                          "[compare/report.md](compare/report.md)."]
    lines += ["", "## Parameter importances (Optuna)", ""]
    lines += ([imp_note] if imp_note else
              md_table(["parameter", *cfg.study.objectives],
                       [{k: _value(v) for k, v in r.items()} for r in imp_rows]))
    lines += ["", "All trials: [trials.csv](trials.csv)."]
    write_text(out / "report.md", "\n".join(lines) + "\n")
    return out


def pareto_runs(folder: Path) -> list[str]:
    """The finished run directories of the Pareto nets of every study in a sweep folder's
    journal."""
    storage = JournalStorage(JournalFileBackend(str(journal_path(folder))))
    runs = []
    for name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
            runs += [folder / t.user_attrs["net_run"] for t in study.best_trials]
    return [str(run) for run in runs if RunDir(run).finished]


def expand_sweeps(paths: list[str]) -> list[str]:
    """Run directories for `compare`: a sweep folder (one holding a journal) stands for its
    Pareto nets."""
    out = []
    for path in paths:
        if not journal_path(Path(path)).is_file():
            out.append(path)
            continue
        found = pareto_runs(Path(path))
        if not found:
            raise ValueError(f"{path}: a sweep folder without a finished trial")
        out += found
    return out
