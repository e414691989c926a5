"""The shared command-line pieces: config-key flags, --set, and the one error handler."""
import argparse
import importlib.util
from pathlib import Path

import pytest
import yaml

from nas_kws.cli import main
from nas_kws.cliflags import (
    add_debug_flag,
    add_quiet_flag,
    add_set_flag,
    overrides_from_args,
    run_main,
)
from nas_kws.errors import NasKwsError

ROOT = Path(__file__).resolve().parent.parent


def parser_running(func) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prog")
    add_debug_flag(p)
    sub = p.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("cmd")
    cmd.add_argument("--epochs", type=int)
    add_set_flag(cmd)
    add_quiet_flag(cmd)
    cmd.set_defaults(func=func)
    return p


def test_flags_and_set_become_dotted_overrides_set_winning():
    args = parser_running(None).parse_args(["cmd", "--epochs", "3",
                                            "--set", "train.lr=0.1", "train.epochs=5"])
    assert overrides_from_args(args, {"epochs": "train.epochs"}) == {"train.epochs": "5",
                                                                     "train.lr": "0.1"}
    args = parser_running(None).parse_args(["cmd", "--quiet"])
    assert args.quiet and overrides_from_args(args, {"epochs": "train.epochs"}) == {}


@pytest.mark.parametrize("error", [ValueError("bad value"), FileNotFoundError("no file"),
                                   yaml.YAMLError("bad yaml"), NasKwsError("user error")])
def test_expected_errors_are_one_line_and_exit_code_2(error, capsys):
    def fail(args):
        raise error

    assert run_main(parser_running(fail), ["cmd"]) == 2
    assert capsys.readouterr().err == f"prog cmd: error: {error}\n"
    with pytest.raises(type(error)):
        run_main(parser_running(fail), ["--debug", "cmd"])


def test_bugs_keep_their_traceback():
    def fail(args):
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run_main(parser_running(fail), ["cmd"])
    assert run_main(parser_running(lambda args: None), ["cmd"]) == 0


def test_nas_kws_and_run_exp_share_the_handler(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("run_exp", ROOT / "run_exp.py")
    run_exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_exp)
    assert main(["eval", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"nas-kws eval: error: {tmp_path}")
    assert run_exp.main(["--path", str(tmp_path), "--train"]) == 2
    assert capsys.readouterr().err == (f"run_exp.py: error: {tmp_path}/genotype.yaml: no genotype "
                                       "to retrain (run a search first)\n")
    with pytest.raises(FileNotFoundError):
        main(["--debug", "eval", str(tmp_path)])
