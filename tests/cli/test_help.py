"""`--help` of both command lines speaks to users: no developer docstrings, no module paths."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import pytest

from agent.cli import COMMANDS as DEVICE_COMMANDS
from agent.cli.subcommands import build_parser, help_texts, run
from tests import paths
from tools.hub_cli import COMMANDS as HUB_COMMANDS

ROOT = str(paths.ROOT)
# agent.cli.main looks up agent.cli.run at call time, which importing the agent.cli.run subcommand
# replaces with that module: in process, call the registry's run() with the same registries.
CLIS = {cli: (registry, lambda argv, cli=cli, registry=registry: run(cli, "", registry, "0", argv))
        for cli, registry in (("gatewatch", DEVICE_COMMANDS), ("gatewatch-hub", HUB_COMMANDS))}


def _module_names():
    """Every module and file path of the tree, as a developer docstring would name them."""
    names = set()
    for top in ("agent", "tools", "hal"):
        for d, _, fs in os.walk(os.path.join(ROOT, top)):
            for f in fs:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(d, f), ROOT)
                    names.add(rel)
                    mod = rel[:-3].replace(os.sep, ".")
                    if mod.endswith(".__init__"):
                        mod = mod[:-len(".__init__")]
                    if "." in mod:
                        names.add(mod)
    return names


MODULES = _module_names()
DEV_WORDS = re.compile(r"\bOwns\b|Must not touch|``")


def _commands():
    """(cli, argv) for every command and sub-action, found by walking the real parsers."""
    out = []
    for cli, (registry, _main) in CLIS.items():
        def walk(parser, argv):
            out.append((cli, argv))
            for act in parser._actions:
                if isinstance(act, argparse._SubParsersAction):
                    for name, sp in act.choices.items():
                        walk(sp, argv + [name])
        walk(build_parser(cli, "", registry, "0"), [])
    return out


COMMANDS = _commands()


def test_every_registered_command_is_walked():
    walked = {(cli, tuple(argv[:1])) for cli, argv in COMMANDS if argv}
    for cli, (registry, _main) in CLIS.items():
        for name, modname in registry.items():
            import importlib.util
            if importlib.util.find_spec(modname) is not None:
                assert (cli, (name,)) in walked


@pytest.mark.parametrize("cli,argv", COMMANDS, ids=[" ".join([c] + a) for c, a in COMMANDS])
def test_help_has_no_developer_text(capsys, cli, argv):
    with pytest.raises(SystemExit) as e:
        CLIS[cli][1](argv + ["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: %s" % " ".join([cli] + argv))
    assert not DEV_WORDS.search(text), text
    named = sorted(m for m in MODULES if re.search(r"(?<![\w.])%s(?![\w])" % re.escape(m), text))
    assert not named, "%s --help names modules %s:\n%s" % (" ".join([cli] + argv), named, text)


MODULE_PARAMS = [(cli, name, modname) for cli, (registry, _m) in CLIS.items() for name, modname in registry.items()]


@pytest.mark.parametrize("cli,name,modname", MODULE_PARAMS)
def test_every_command_has_a_one_line_help(cli, name, modname):
    import importlib
    import importlib.util
    if importlib.util.find_spec(modname) is None:
        pytest.skip("%s is not in this tree" % modname)
    short, _ = help_texts(importlib.import_module(modname))
    assert short and "\n" not in short, (cli, name)


def test_help_comes_from_help_attribute_else_main_docstring_never_the_module_docstring(tmp_path, monkeypatch, capsys):
    (tmp_path / "gw_fake_with.py").write_text(
        '"""Owns the fake. Must not touch anything."""\n'
        'HELP = "do the fake thing"\nDESCRIPTION = "The fake thing, at length."\n'
        'def add_arguments(p):\n    pass\n'
        'def main(args):\n    """Developer note."""\n    return 0\n')
    (tmp_path / "gw_fake_without.py").write_text(
        '"""Owns the other fake. Must not touch anything."""\n'
        'def add_arguments(p):\n    pass\n'
        'def main(args):\n    """Do the other fake thing.\n\n    More for developers.\n    """\n    return 0\n')
    (tmp_path / "gw_fake_bare.py").write_text(
        '"""Owns the bare fake."""\ndef add_arguments(p):\n    pass\ndef main(args):\n    return 0\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    parser = build_parser("x", "top", {"with": "gw_fake_with", "without": "gw_fake_without",
                                        "bare": "gw_fake_bare"}, "0")
    top = parser.format_help()
    assert "do the fake thing" in top and "Do the other fake thing." in top and "Owns" not in top
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert "The fake thing, at length." in sub["with"].format_help()
    assert "Do the other fake thing." in sub["without"].format_help()
    for p in sub.values():
        assert "Owns" not in p.format_help() and "Must not touch" not in p.format_help()


@pytest.mark.parametrize("tool", ["agent.cli", "tools.hub_cli"])
def test_help_through_the_real_entry_point(tool):
    r = subprocess.run([sys.executable, "-m", tool, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and "COMMAND" in r.stdout and not DEV_WORDS.search(r.stdout)


def test_main_can_be_called_twice_in_one_process(capsys):
    # `from agent.cli.subcommands import run` was rebound to the agent.cli.run module on first use
    from agent.cli import main
    for _ in range(2):
        with pytest.raises(SystemExit) as exit_info:
            main(["--version"])
        assert exit_info.value.code == 0
    assert capsys.readouterr().out.count("gatewatch") == 2
