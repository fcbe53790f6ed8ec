"""#10.8: `p2p-offers --help` is for users: what to run, no module names or reST markup."""

from __future__ import annotations

import argparse

import pytest

from p2p_offers.cli import build_parser


def _helps() -> list[tuple[str, str]]:
    parser = build_parser()
    texts = [("p2p-offers", parser.format_help())]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            texts += [(name, sub.format_help()) for name, sub in action.choices.items()]
    return texts


@pytest.mark.parametrize("name, text", _helps(), ids=lambda v: v if len(v) < 20 else "")
def test_help_is_user_text(name, text):
    assert "``" not in text and ".py" not in text, text
    assert "start-all" in _helps()[0][1]


def test_every_server_flag_says_what_it_is():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("grape", "node", "start-all", "testbed"):
        for action in sub.choices[command]._actions:
            assert action.help, f"{command} {action.option_strings} has no help"
