"""`nas-kws zoo list | build NAME... | verify [NAME...]`: the reference runs shipped for the
embedded default synthetic set (see nas_kws.zoo). `build` runs the lab's own commands: train,
`quantize qat` at each of the index's weight widths, and for the first seed `export --int8` and
`bench latency`."""
from __future__ import annotations

import argparse
import statistics

from nas_kws.cliflags import add_quiet_flag
from nas_kws.demo_commands import run_step
from nas_kws.runs import RunDir, latency_path
from nas_kws.zoo import WORK_DIR


def _index_and_names(args: argparse.Namespace):
    from nas_kws.zoo import read_index

    index = read_index()
    names = getattr(args, "names", None) or index.models
    unknown = [n for n in names if n not in index.models]
    if unknown:
        raise ValueError(f"{unknown}: not in the zoo index {index.root / 'index.yaml'}; its "
                         f"models: {', '.join(index.models)}")
    return index, names


def _current_set(index, quiet: bool):
    """(store, fingerprint) of the set the zoo is for, built on first use."""
    from nas_kws.data.loader import open_dataset
    from nas_kws.zoo import fingerprint

    store = open_dataset(index.data, progress=not quiet)
    return store, fingerprint(index.data, store)


def _acc_text(accs: list[float]) -> str:
    if not accs:
        return "-"
    spread = f" +- {100 * statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
    return f"{100 * statistics.mean(accs):.2f}{spread}"


def cmd_list(args: argparse.Namespace) -> int:
    from nas_kws.zoo import describe_model, qat_tag, set_name

    index, names = _index_and_names(args)
    print(f"reference runs in {index.root} for the set {set_name(index.data)}: "
          f"recipe {index.recipe} {' '.join(index.overrides)}, seeds "
          f"{', '.join(map(str, index.seeds))}")
    tags = [qat_tag(b) for b in index.qat_weight_bits]
    print(f"{'model':12s} {'params':>9s} {'MACs':>12s} {'seeds':>7s} {'test acc %':>14s} "
          + "".join(f"{'QAT ' + tag + ' %':>15s} " for tag in tags) + f"{'int8 ms':>8s}  status")
    for name in names:
        d = describe_model(index, name)
        stale = sorted(set(d["built"]) - set(d["current"]))
        status = ("built" if d["current"] == index.seeds else
                  f"{len(d['current'])} of {len(index.seeds)} seeds" if d["current"] else
                  "not built")
        if stale:
            status += f", stale seeds {stale} (trained on another set)"
        twins = min(map(len, d["qat"].values()), default=len(d["current"]))
        if twins < len(d["current"]) or (d["current"] and not d["int8_ms"]):
            status += (f", QAT twins of {twins} of {len(d['current'])} seeds"
                       f"{'' if d['int8_ms'] else ', no latency'} (nas-kws zoo build {name})")
        params, macs = (f"{d[k]:,}" if d[k] else "-" for k in ("params", "macs"))
        qat = "".join(f"{_acc_text(d['qat'][tag]):>15s} " for tag in tags)
        latency = f"{statistics.mean(d['int8_ms']):.3f}" if d["int8_ms"] else "-"
        print(f"{name:12s} {params:>9s} {macs:>12s} "
              f"{','.join(map(str, d['current'])) or '-':>7s} {_acc_text(d['accs']):>14s} "
              f"{qat}{latency:>8s}  {status}")
        if d["current"] != index.seeds:
            argv = index.train_argv(name, 0, WORK_DIR / name / "seedSEED", shown=True)
            argv[argv.index("--seed") + 1] = "SEED"
            print(f"    build: nas-kws zoo build {name}   (runs: nas-kws {' '.join(argv)})")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from nas_kws.zoo import trained_on

    index, names = _index_and_names(args)
    store, current = _current_set(index, args.quiet)
    for name in names:
        for seed in index.seeds:
            work = RunDir(index.work(name, seed, args.work))
            if trained_on(index.run(name, seed)) == current:
                print(f"{name}/seed{seed}: built (trained on {current})")
            elif not _build_float(args, index, name, seed, work, store, current):
                continue
            _build_qat(args, index, name, seed, work, current)
            if seed == index.seeds[0]:   # latency depends on the net, not on the seed
                _build_latency(args, index, name, seed, work)
    return 0


def _build_float(args, index, name: str, seed: int, work: RunDir, store, current: str) -> bool:
    """Train (or resume) the float run in `work` and pack it; False when --pack_only skips it."""
    from nas_kws.zoo import pack

    label = f"{name}/seed{seed}"
    if not work.finished:
        if args.pack_only:
            print(f"{label}: {work.path} has not finished (no metrics.json): skipped")
            return False
        if work.keep_if_resumable():
            run_step(args, ["train", "--resume", str(work.path), "--quiet"], _again(name))
        else:
            run_step(args, index.train_argv(name, seed, work.path), _again(name))
    acc = pack(index, name, seed, work, store, current)
    print(f"{label}: packed {work.path} into {index.run(name, seed).path} "
          f"(test acc {acc:.4f} reproduced)")
    return True


def _again(name: str) -> str:
    return f"`nas-kws zoo build {name}`"


def _build_qat(args, index, name: str, seed: int, work: RunDir, current: str) -> None:
    """QAT twins of the packed run's weights, fine-tuned into WORK/.../quant/ and packed."""
    from nas_kws.zoo import ZooError, check_qat, pack_qat, qat_tag, weights_digest

    base = weights_digest(index.run(name, seed))
    for bits in index.qat_weight_bits:
        label = f"{name}/seed{seed} QAT {qat_tag(bits)}"
        packed = index.qat_twin(name, seed, bits)
        if packed.finished:
            try:
                print(f"{label}: packed (test acc {check_qat(packed, current, base):.4f})")
                continue
            except ZooError as err:
                print(f"{label}: fine-tuning again: {err}")
        twin = work.quant_run("qat", qat_tag(bits))
        if not twin.finished:
            if args.pack_only:
                print(f"{label}: {twin.path} has not finished (no metrics.json): skipped")
                continue
            resume = ["--resume"] if twin.keep_if_resumable() else []
            run_step(args, index.qat_argv(name, seed, bits, twin.path) + resume, _again(name))
        acc = pack_qat(index, name, seed, bits, twin, work, current)
        print(f"{label}: packed {twin.path} into {packed.path} (test acc {acc:.4f})")


def _build_latency(args, index, name: str, seed: int, work: RunDir) -> None:
    """ONNX fp32 and all-integer int8 exports of the packed run into WORK/.../export/, timed
    with `nas-kws bench latency`; the latency files are packed."""
    from nas_kws.zoo import LATENCY_KINDS, pack_latency, packed_latency

    label = f"{name}/seed{seed} latency"
    run = index.run(name, seed)
    if set(packed_latency(run)) == set(LATENCY_KINDS):
        print(f"{label}: packed")
        return
    models = [work.export.onnx_path(kind) for kind in LATENCY_KINDS]
    if not all(latency_path(m).is_file() for m in models):
        if args.pack_only:
            print(f"{label}: no latency files in {work.export.path}: skipped")
            return
        if not all(m.is_file() for m in models):
            run_step(args, ["export", str(run.path), "--int8", "--out", str(work.export.path)],
                     _again(name))
        run_step(args, ["bench", "latency", *map(str, models)], _again(name))
    found = pack_latency(index, name, seed, work.export)
    print(f"{label}: packed "
          + ", ".join(f"{kind} {ms:.3f} ms" for kind, ms in found.items()))


def cmd_verify(args: argparse.Namespace) -> int:
    from nas_kws.zoo import ZooError, verify_run

    index, names = _index_and_names(args)
    runs = [(n, s) for n in names for s in index.seeds if index.run(n, s).finished]
    if not runs:
        if args.names:
            raise ValueError(f"{', '.join(names)}: no reference run built yet "
                             f"(nas-kws zoo build {' '.join(names)})")
        print(f"no reference run built yet in {index.root}")
        return 0
    store, current = _current_set(index, args.quiet)
    failures = []
    for name, seed in runs:
        try:
            checked = verify_run(index, name, seed, store, current)
            print(f"ok    {name}/seed{seed}  {checked}")
        except ZooError as err:
            print(f"FAIL  {name}/seed{seed}  {err}")
            failures.append(err)
    if failures:
        raise ZooError(f"{failures[0]}" + (f" (and {len(failures) - 1} more failed run(s), "
                                           "listed above)" if len(failures) > 1 else ""))
    print(f"{len(runs)} reference run(s) verified on {current}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zoo", help="reference runs shipped for the embedded synthetic set: "
                                   "list, build, verify")
    zoo = p.add_subparsers(dest="zoo_command", required=True, metavar="ACTION")
    q = zoo.add_parser("list", help="models, seeds, test and QAT accuracy, int8 latency, status "
                                    "and build commands")
    q.add_argument("names", nargs="*", metavar="NAME")
    q.set_defaults(func=cmd_list)
    q = zoo.add_parser("build", help="train (resumable), QAT, export and time reference runs "
                                     "with their recorded commands and seeds, and pack them")
    q.add_argument("names", nargs="+", metavar="NAME")
    q.add_argument("--work", default=str(WORK_DIR),
                   help="where the trainings run, as WORK/NAME/seedS (default runs/zoo), with "
                        "their QAT twins in quant/ and ONNX exports in export/; finished ones "
                        "there are packed without running again")
    q.add_argument("--pack_only", action="store_true",
                   help="pack the finished trainings, QAT twins and latency files in WORK only; "
                        "never train or write there")
    add_quiet_flag(q)
    q.set_defaults(func=cmd_build)
    q = zoo.add_parser("verify", help="re-evaluate every packed checkpoint on the current set: "
                                      "fails on a stale fingerprint, a changed accuracy or a "
                                      "stale or corrupt QAT / latency file")
    q.add_argument("names", nargs="*", metavar="NAME")
    add_quiet_flag(q)
    q.set_defaults(func=cmd_verify)
