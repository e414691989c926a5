"""Does the search earn its keep? Searched nets against nets drawn at random inside the same MAC
band and against the BC-ResNet family, all retrained with one recipe on the same data.

Per setting (space, budget): the search over 3 seeds (each searched net retrained with its
search's seed), K random nets from `--strategy random` (one seed each; `--random_seeds 0,1,2`
trains each with several, to measure seed noise), and the baselines over 3 seeds (BC-ResNet-1/
1.5/2/3/8, whose means make the BC-ResNet curve, and DS-CNN-S beside it), with
`experiments/demo.yaml`. A baseline the zoo ships for the same command (`nas-kws zoo`: same
recipe, seed and data, no --epochs / --batch_size) is read from its reference run, not
retrained. Every finished training appends a row to
`benchmarks/results/search_vs_random.csv` (locked, atomic), so an interrupted run resumes where
it stopped (unfinished trainings resume from their checkpoints) and the rows can be committed
between sessions. The table (mean +- std, the searched - random difference with its standard
error, the searched nets' percentile among the random ones, the BC-ResNet curve interpolated in
log MACs), the seed noise set against the random band's
spread, and the plot are rewritten after every row.

    python benchmarks/search_vs_random.py                      # everything, hours on 2 cores
    python benchmarks/search_vs_random.py --kinds random --settings hybrid-6M
    python benchmarks/search_vs_random.py --report             # table and plot from the CSV
    python benchmarks/search_vs_random.py --quick --out runs/q # minutes, tiny set (tests)

Searched rows carry a tag (`--tag`, default `default`) and the search overrides that made them
(`--search_set KEY=VALUE ...`), so ablations of the search share the random and baseline rows.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import io
import math
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RECIPE = ROOT / "experiments" / "demo.yaml"
COLUMNS = ["setting", "kind", "tag", "net", "seed", "macs", "params", "valid_acc", "test_acc",
           "train_seconds", "search_seconds"]
BASELINES = ("bcresnet1", "bcresnet1.5", "bcresnet2", "bcresnet3", "bcresnet8", "dscnn_s")
CURVE_FAMILY = "bcresnet"   # the baselines whose means make the curve (by name prefix)


@dataclass(frozen=True)
class Setting:
    name: str
    space: str
    budget: float
    width_mult: float = 1.0
    n_mfcc: int | None = None

    def search_flags(self) -> list[str]:
        flags = ["--search_space", self.space, "--flops_ref_value", str(self.budget),
                 "--width_mult", str(self.width_mult)]
        return flags + (["--n_mfcc", str(self.n_mfcc)] if self.n_mfcc else [])


SETTINGS = (Setting("hybrid-3M", "hybrid", 3e6, width_mult=0.5),
            Setting("hybrid-6M", "hybrid", 6e6),
            Setting("hybrid-12M", "hybrid", 12e6),
            Setting("hybrid_ts-6M", "hybrid_ts", 6e6),
            Setting("proxyless-20M", "proxyless_kws", 20e6, n_mfcc=10))


# --- result rows ----------------------------------------------------------------------------------

@contextlib.contextmanager
def locked(csv_path: Path) -> Iterator[None]:
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def read_rows(csv_path: Path) -> list[dict[str, Any]]:
    if not csv_path.is_file():
        return []
    return list(csv.DictReader(io.StringIO(csv_path.read_text())))


def append_row(csv_path: Path, row: dict[str, Any]) -> None:
    from nas_kws.fileio import write_csv

    with locked(csv_path):
        write_csv(csv_path, COLUMNS, read_rows(csv_path) + [row])


def row_key(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in ("setting", "kind", "tag", "net", "seed"))


# --- jobs -----------------------------------------------------------------------------------------

def nas_kws(argv: list[str]) -> None:
    from nas_kws.cli import main

    print(f"$ nas-kws {' '.join(argv)}", flush=True)
    if main(argv) != 0:
        raise SystemExit(f"search_vs_random: `nas-kws {' '.join(argv)}` failed (see above)")


def train(model_flags: list[str], run: Path, seed: int, extra: list[str]) -> dict[str, Any]:
    """Train (or resume, or read back) one run with the protocol's recipe."""
    from nas_kws.runs import RunDir

    if not RunDir(run).metrics_path.is_file():
        if RunDir(run).has_checkpoint("last"):
            nas_kws(["train", "--resume", str(run), "--quiet"])
        else:
            nas_kws(["train", *model_flags, "--config", str(RECIPE), "--seed", str(seed),
                     "--run_dir", str(run), "--quiet", *extra])
    return RunDir(run).read_metrics()


def result_row(setting: str, kind: str, tag: str, net: str, seed: int, metrics: dict[str, Any],
               search_seconds: float | str = "") -> dict[str, Any]:
    return {"setting": setting, "kind": kind, "tag": tag, "net": net, "seed": seed,
            "macs": metrics["macs"], "params": metrics["params"],
            "valid_acc": round(metrics["best_valid_acc"], 5),
            "test_acc": round(metrics["test_best_acc"], 5),
            "train_seconds": round(metrics.get("train_seconds", 0.0), 1),
            "search_seconds": search_seconds}


def zoo_metrics(name: str, seed: int, train_extra: list[str]) -> dict[str, Any] | None:
    """The metrics of the zoo's reference run of `name` / `seed` when it was trained with the
    command the protocol would run (same recipe and overrides, current data), else None."""
    from nas_kws.zoo import is_current, read_index

    index = read_index()
    same_command = (index.recipe == RECIPE.name
                    and train_extra == ["--set", *index.overrides])
    if not same_command or name not in index.models or seed not in index.seeds:
        return None
    run = index.run(name, seed)
    return run.read_metrics() if run.finished and is_current(run, index.data) else None


class Protocol:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out)
        self.csv = Path(args.csv)
        self.train_extra = ["--epochs", str(args.epochs)] if args.epochs else []
        self.search_extra = []
        if args.batch_size:
            self.train_extra += ["--batch_size", str(args.batch_size)]
            self.search_extra += ["--train_batch_size", str(args.batch_size)]
        # last, as `--set` takes every value after it (the search's own --search_set follow)
        self.train_extra += ["--set", f"data.synth_size={args.synth_size}"]
        self.search_extra += ["--set", f"data.synth_size={args.synth_size}"]
        self.done = {row_key(r) for r in read_rows(self.csv)}

    def record(self, row: dict[str, Any]) -> None:
        append_row(self.csv, row)
        self.done.add(row_key(row))
        write_report(self.csv, self.args)

    def pending(self, setting: str, kind: str, tag: str, net: str, seed: int) -> bool:
        return row_key({"setting": setting, "kind": kind, "tag": tag, "net": net,
                        "seed": seed}) not in self.done

    def baselines(self) -> None:
        for seed in self.args.seed_list:
            for name in self.args.baseline_list:
                if self.pending("baseline", "baseline", "-", name, seed):
                    run = self.out / "baseline" / name / f"seed{seed}"
                    metrics = (zoo_metrics(name, seed, self.train_extra)
                               or train(["--model", name], run, seed, self.train_extra))
                    self.record(result_row("baseline", "baseline", "-", name, seed, metrics))

    def random_nets(self, s: Setting) -> None:
        from nas_kws.nas.random_search import net_dir
        from nas_kws.runs import RunDir

        path = self.out / s.name / "random"
        if not RunDir(path).metrics_path.is_file():
            nas_kws(["search", "--strategy", "random", "--n", str(self.args.n_random),
                     "--path", str(path), "--manual_seed", "0", "--quiet", *s.search_flags(),
                     *self.search_extra])
        for seed in self.args.random_seed_list:
            for i in range(self.args.n_random):
                net = net_dir(path, i)
                if self.pending(s.name, "random", "-", net.name, seed):
                    run = net / ("retrain" if seed == 0 else f"retrain-seed{seed}")
                    metrics = train(["--genotype", str(net / "genotype.yaml")], run, seed,
                                    self.train_extra)
                    self.record(result_row(s.name, "random", "-", net.name, seed, metrics))

    def searched(self, s: Setting) -> None:
        from nas_kws.runs import RunDir

        tag = self.args.tag
        for seed in self.args.seed_list:
            if not self.pending(s.name, "searched", tag, f"search{seed}", seed):
                continue
            path = self.out / s.name / f"searched-{tag}" / f"seed{seed}"
            run = RunDir(path)
            if not run.metrics_path.is_file():
                started = run.has_checkpoint("last") or (path / "candidates").is_dir()
                if started:
                    nas_kws(["search", "--path", str(path), "--resume", "--quiet"])
                else:
                    shutil.rmtree(path, ignore_errors=True)   # stopped before any progress
                    config = ["--config", self.args.search_config] if self.args.search_config \
                        else []
                    nas_kws(["search", "--path", str(path), "--manual_seed", str(seed), "--quiet",
                             *config, *s.search_flags(), *self.search_epochs(), *self.search_extra,
                             *self.args.search_set])
            search_seconds = round(run.read_metrics()["search_seconds"], 1)
            metrics = train(["--genotype", str(path / "genotype.yaml")], path / "retrain", seed,
                            self.train_extra)
            self.record(result_row(s.name, "searched", tag, f"search{seed}", seed, metrics,
                                   search_seconds))

    def search_epochs(self) -> list[str]:
        if not self.args.search_epochs:
            return []
        warmup, search = self.args.search_epochs.split(",")
        return ["--warmup_epochs", warmup, "--n_epochs", search]

    def run(self) -> None:
        kinds = self.args.kinds.split(",")
        settings = [s for s in SETTINGS if s.name in self.args.settings.split(",")]
        if "baseline" in kinds:
            self.baselines()
        for s in settings:
            if "random" in kinds:
                self.random_nets(s)
            if "searched" in kinds:
                self.searched(s)


# --- report ---------------------------------------------------------------------------------------

def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def baseline_points(rows: list[dict[str, Any]]) -> list[tuple[float, float, str]]:
    """(MACs, mean test accuracy, name) of each baseline, sorted by MACs."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["kind"] == "baseline":
            by_name.setdefault(r["net"], []).append(r)
    return sorted((float(v[0]["macs"]), mean_std([float(x["test_acc"]) for x in v])[0], name)
                  for name, v in by_name.items())


def bcresnet_curve(rows: list[dict[str, Any]]) -> list[tuple[float, float, str]]:
    return [p for p in baseline_points(rows) if p[2].startswith(CURVE_FAMILY)]


def interpolate(curve: list[tuple[float, float, str]], macs: float) -> float | None:
    """The curve linearly in log MACs at `macs`; None outside its span."""
    for (m0, a0, _), (m1, a1, _) in zip(curve, curve[1:]):
        if m0 <= macs <= m1:
            w = (math.log(macs) - math.log(m0)) / (math.log(m1) - math.log(m0))
            return a0 + w * (a1 - a0)
    return None


def per_net(group: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Test accuracies (%) of each net of a group, one per seed."""
    accs: dict[str, list[float]] = {}
    for r in group:
        accs.setdefault(r["net"], []).append(100 * float(r["test_acc"]))
    return accs


def noise_lines(rows: list[dict[str, Any]]) -> list[str]:
    """How much of the random band's spread is the nets and how much their training seed: the
    seed std pooled over every net trained with more than one seed (one-way random effects)."""
    runs: dict[tuple[str, str], list[float]] = {}   # (setting, net) -> accuracies over seeds
    for r in rows:
        if r["kind"] in ("baseline", "random"):
            runs.setdefault((r["setting"], r["net"]), []).append(100 * float(r["test_acc"]))
    repeated = [v for v in runs.values() if len(v) > 1]
    if not repeated:
        return []
    dof = sum(len(v) - 1 for v in repeated)
    seed_var = sum((len(v) - 1) * statistics.variance(v) for v in repeated) / dof
    lines = [f"Seed noise: the same net's test accuracy varies by {math.sqrt(seed_var):.2f} "
             f"points (std pooled over {len(repeated)} nets trained with 2-3 seeds, {dof} "
             f"degrees of freedom)."]
    for setting in dict.fromkeys(r["setting"] for r in rows if r["kind"] == "random"):
        nets = per_net([r for r in rows if r["kind"] == "random" and r["setting"] == setting])
        if len(nets) < 2:
            continue
        means = [statistics.mean(v) for v in nets.values()]
        expected = seed_var * statistics.mean(1 / len(v) for v in nets.values())
        between = statistics.variance(means)
        lines.append(f"{setting}: the random nets' means spread by {math.sqrt(between):.2f} "
                     f"(std over {len(nets)} nets); seed noise alone would give "
                     f"{math.sqrt(expected):.2f}, so the nets themselves differ by about "
                     f"{math.sqrt(max(0.0, between - expected)):.2f}.")
    return lines


def summary_lines(rows: list[dict[str, Any]]) -> list[str]:
    curve = bcresnet_curve(rows)
    lines = ["| setting | nets | n | MACs (mean) | test acc % mean +- std | valid acc % | "
             "vs random mean +- std error | percentile among random | "
             "BC-ResNet curve at its MACs |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for macs, acc, name in baseline_points(rows):
        group = [r for r in rows if r["kind"] == "baseline" and r["net"] == name]
        m, s = mean_std([100 * float(r["test_acc"]) for r in group])
        v = statistics.mean(100 * float(r["valid_acc"]) for r in group)
        ref = interpolate(curve, macs) if not name.startswith(CURVE_FAMILY) else None
        curve_at = f"{100 * ref:.2f} ({m - 100 * ref:+.2f})" if ref is not None else ""
        lines.append(f"| baseline | {name} | {len(group)} | {macs:,.0f} | {m:.2f} +- {s:.2f} | "
                     f"{v:.2f} | | | {curve_at} |")
    for setting in dict.fromkeys(r["setting"] for r in rows if r["kind"] != "baseline"):
        random = [statistics.mean(v) for v in per_net(
            [r for r in rows if r["setting"] == setting and r["kind"] == "random"]).values()]
        groups = {("random", "-"): [r for r in rows if r["setting"] == setting
                                    and r["kind"] == "random"]}
        for r in rows:
            if r["setting"] == setting and r["kind"] == "searched":
                groups.setdefault(("searched", r["tag"]), []).append(r)
        for (kind, tag), group in groups.items():
            if not group:
                continue
            accs = [statistics.mean(v) for v in per_net(group).values()]   # seeds averaged
            m, s = mean_std(accs)
            v = statistics.mean(100 * float(r["valid_acc"]) for r in group)
            macs = statistics.mean(float(r["macs"]) for r in group)
            ref = interpolate(curve, macs)
            ref = None if ref is None else 100 * ref
            vs_random = percentile = ""
            if kind == "searched" and random:
                vs_random = f"{m - statistics.mean(random):+.2f}"
                if len(accs) > 1:   # one search has no spread to estimate its error from
                    # standard error of the difference of two independent means (nets as samples)
                    se = math.sqrt(s ** 2 / len(accs) + mean_std(random)[1] ** 2 / len(random))
                    vs_random += f" +- {se:.2f}"
                percentile = f"{100 * sum(a < m for a in random) / len(random):.0f}"
            curve_at = f"{ref:.2f} ({m - ref:+.2f})" if ref is not None else "outside"
            label = "random" if kind == "random" else f"searched ({tag})"
            lines.append(f"| {setting} | {label} | {len(accs)} | {macs:,.0f} | {m:.2f} +- "
                         f"{s:.2f} | {v:.2f} | {vs_random} | {percentile} | {curve_at} |")
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    from nas_kws.plots import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    curve = bcresnet_curve(rows)
    if curve:
        ax.plot([c[0] for c in curve], [100 * c[1] for c in curve], "k-o", label="BC-ResNet")
        for macs, acc, name in curve:
            ax.annotate(name, (macs, 100 * acc), fontsize=7, xytext=(3, -9),
                        textcoords="offset points")
    for macs, acc, name in baseline_points(rows):
        if not name.startswith(CURVE_FAMILY):
            ax.plot(macs, 100 * acc, "ks", mfc="none")
            ax.annotate(name, (macs, 100 * acc), fontsize=7, xytext=(3, 4),
                        textcoords="offset points")
    random = [r for r in rows if r["kind"] == "random"]
    ax.scatter([float(r["macs"]) for r in random], [100 * float(r["test_acc"]) for r in random],
               s=14, c="tab:gray", alpha=0.7, label="random (a point per seed)")
    keys = dict.fromkeys((r["setting"], r["tag"]) for r in rows if r["kind"] == "searched")
    for setting, tag in keys:
        group = [r for r in rows if r["kind"] == "searched" and r["setting"] == setting
                 and r["tag"] == tag]
        m, s = mean_std([100 * float(r["test_acc"]) for r in group])
        ax.errorbar(statistics.mean(float(r["macs"]) for r in group), m, yerr=s, fmt="*",
                    ms=11, capsize=3, label=f"searched {setting} ({tag})")
    ax.set_xscale("log")
    ax.set_xlabel("MACs per 1 s clip")
    ax.set_ylabel("test accuracy % (best-valid checkpoint)")
    ax.set_title("search vs random vs baselines (mean +- std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def write_report(csv_path: Path, args: argparse.Namespace) -> None:
    from nas_kws.fileio import write_text

    rows = read_rows(csv_path)
    if not rows:
        return
    text = "\n".join(summary_lines(rows) + [""] + noise_lines(rows)) + "\n"
    write_text(csv_path.with_suffix(".md"), text)
    plot(rows, csv_path.with_suffix(".png"))
    if args.report:
        print(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="runs/search_vs_random", help="run directories")
    p.add_argument("--csv", default=str(RESULTS / "search_vs_random.csv"))
    p.add_argument("--settings", default=",".join(s.name for s in SETTINGS))
    p.add_argument("--kinds", default="baseline,random,searched")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--baselines", default=",".join(BASELINES),
                   help=f"reference models; the {CURVE_FAMILY}* ones make the curve")
    p.add_argument("--n_random", type=int, default=5)
    p.add_argument("--random_seeds", default="0",
                   help="training seeds of each random net (more than one measures seed noise)")
    p.add_argument("--tag", default="default", help="label of the searched rows")
    p.add_argument("--search_set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="search overrides for the searched rows (give them their own --tag)")
    p.add_argument("--search_config", help="search config YAML for the searched rows")
    p.add_argument("--search_epochs", help="warm-up,search epochs (default: the search's)")
    p.add_argument("--synth_size", default="default")
    p.add_argument("--epochs", type=int, help="training epochs (default: the recipe's 30)")
    p.add_argument("--batch_size", type=int, help="training and search batch (default: theirs)")
    p.add_argument("--report", action="store_true", help="only print the table and write the plot")
    p.add_argument("--quick", action="store_true",
                   help="tiny set, 1 seed, 2 random nets, 1-epoch trainings (for tests)")
    args = p.parse_args(argv)
    if args.quick:
        args.synth_size, args.seeds, args.n_random, args.epochs = "tiny", "0", 2, 1
        args.batch_size = 16
        args.settings, args.baselines, args.search_epochs = "hybrid-6M", "bcresnet1", "1,1"
    args.seed_list = [int(s) for s in args.seeds.split(",")]
    args.random_seed_list = [int(s) for s in args.random_seeds.split(",")]
    args.baseline_list = args.baselines.split(",")
    return args


def main(argv: list[str] | None = None) -> int:
    from nas_kws.device import set_threads

    args = parse_args(argv)
    set_threads()
    if args.report:
        write_report(Path(args.csv), args)
        return 0
    Protocol(args).run()
    write_report(Path(args.csv), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
