"""Does the supernet rank nets as training them alone does? (Yu et al. 2020, "Evaluating the
search phase of NAS".)

Takes a trained supernet (a search run's last checkpoint) and the random nets of the
search-vs-random protocol at the same setting (paths drawn uniformly from the MAC band, each
retrained alone with the protocol's recipe); measures each path's supernet accuracy on the
validation split (batch norm re-estimated for the path) and prints Kendall tau and Spearman rho
against the stand-alone accuracies, with a scatter plot.

    python benchmarks/supernet_ranking.py --search runs/svr/hybrid-6M/searched-default/seed0 \\
        --random runs/svr/hybrid-6M/random --setting hybrid-6M [--csv ...] [--png ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from search_vs_random import RESULTS, read_rows  # noqa: E402


def ranks(values: list[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b (ties in either list neither concordant nor discordant)."""
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx * dy > 0:
                concordant += 1
            else:
                discordant += 1
    denom = ((concordant + discordant + ties_x) * (concordant + discordant + ties_y)) ** 0.5
    return (concordant - discordant) / denom if denom else 0.0


def spearman_rho(x: list[float], y: list[float]) -> float:
    rx, ry = ranks(x), ranks(y)
    n = len(x)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / var if var else 0.0


def supernet_accuracies(search_run: Path, picks: list[list[int]]) -> list[float]:
    from nas_kws.nas.search import open_search

    job = open_search(search_run)
    return [job.path_accuracy(p, job.valid_loader) for p in picks]


def scatter(supernet: list[float], alone: list[float], title: str, path: Path) -> None:
    from nas_kws.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([100 * a for a in supernet], [100 * a for a in alone])
    ax.set_xlabel("supernet valid accuracy % (path, BN recalibrated)")
    ax.set_ylabel("stand-alone test accuracy % (retrained)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    from nas_kws.device import set_threads

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--search", required=True, help="search run holding the trained supernet")
    p.add_argument("--random", required=True, help="the protocol's random run (net00, ...)")
    p.add_argument("--setting", required=True, help="protocol setting of the random rows")
    p.add_argument("--csv", default=str(RESULTS / "search_vs_random.csv"))
    p.add_argument("--metric", default="test_acc", choices=["test_acc", "valid_acc"],
                   help="stand-alone accuracy to rank against")
    p.add_argument("--png", help="scatter plot (default: beside --csv, named by the search)")
    p.add_argument("--json", help="write the figures here too")
    args = p.parse_args(argv)
    set_threads()
    seeds: dict[str, list[float]] = {}
    for r in read_rows(Path(args.csv)):
        if r["setting"] == args.setting and r["kind"] == "random":
            seeds.setdefault(r["net"], []).append(float(r[args.metric]))
    alone = {net: sum(values) / len(values) for net, values in seeds.items()}   # mean over seeds
    nets = sorted(n for n in alone if (Path(args.random) / n / "metrics.json").is_file())
    if len(nets) < 3:
        raise SystemExit(f"supernet_ranking: {len(nets)} retrained random nets of "
                         f"{args.setting} in {args.csv}; need at least 3 (10 for the protocol)")
    picks = [json.loads((Path(args.random) / n / "metrics.json").read_text())["picks"]
             for n in nets]
    supernet = supernet_accuracies(Path(args.search), picks)
    stand_alone = [alone[n] for n in nets]
    tau, rho = kendall_tau(supernet, stand_alone), spearman_rho(supernet, stand_alone)
    print("| net | supernet valid % | stand-alone % (seed mean) | seeds |\n|---|---:|---:|---:|")
    for n, a, b in zip(nets, supernet, stand_alone):
        print(f"| {n} | {100 * a:.2f} | {100 * b:.2f} | {len(seeds[n])} |")
    print(f"\n{len(nets)} paths: Kendall tau {tau:.3f}, Spearman rho {rho:.3f} "
          f"(supernet {args.search} against stand-alone {args.metric})")
    png = Path(args.png) if args.png else Path(args.csv).parent / (
        f"ranking_{args.setting}_{Path(args.search).parent.name}_{Path(args.search).name}.png")
    scatter(supernet, stand_alone, f"{args.setting}: tau {tau:.2f}, rho {rho:.2f} "
            f"({len(nets)} paths)", png)
    print(f"scatter: {png}")
    if args.json:
        from nas_kws.fileio import write_json

        write_json(args.json, {"nets": nets, "supernet": supernet, "stand_alone": stand_alone,
                               "kendall_tau": tau, "spearman_rho": rho, "search": args.search})
    return 0


if __name__ == "__main__":
    sys.exit(main())
