"""Ctrl-C in the terminal chat (``terminal.interrupt``), in a pseudo-terminal with readline.

A small program stands in for the chat: a readline prompt inside ``interruptible()``, counting
the ``KeyboardInterrupt`` each Ctrl-C gives it. No Django, no Letta: the chat's own tests
(tests/integration/test_chat_terminal*.py) cover what a Ctrl-C does there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

ROOT = Path(__file__).resolve().parent.parent

PROGRAM = r"""
import readline, sys, threading
from terminal.interrupt import ctrl_c, interruptible

ctrl_c.install()
mode = sys.argv[1]
counted = 0

def slow_hook():
    # The prompt's hook runs (Python code, where readline swallows exceptions) until the
    # Ctrl-C typed meanwhile has been counted: its first nudge lands here.
    print("in-hook", flush=True)
    while not ctrl_c._waiting():
        pass

if mode == "hook":
    readline.set_startup_hook(ctrl_c.quiet(slow_hook))
while True:
    try:
        with interruptible():
            line = input(f"p{counted}> ")
    except KeyboardInterrupt:
        counted += 1
        print(f"\ninterrupt {counted}", flush=True)
        if mode == "busy":
            # Outside every interruptible block: a Ctrl-C typed now waits for the next prompt.
            print("busy", flush=True)
            while (order := sys.stdin.readline().split()) != ["done"]:
                while ctrl_c.counted < int(order[1]):  # "wait N": N Ctrl-Cs counted
                    pass
                print(f"counted {ctrl_c.counted}", flush=True)
        continue
    except EOFError:
        break
    print(f"line {line!r}", flush=True)
print("bye", flush=True)
"""


@pytest.fixture
def program(tmp_path) -> Iterator[callable]:
    script = tmp_path / "prompt.py"
    script.write_text(PROGRAM)
    children: list[pexpect.spawn] = []

    def start(mode: str) -> pexpect.spawn:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        child = pexpect.spawn(
            sys.executable, [str(script), mode], env=env, encoding="utf-8", timeout=10
        )
        children.append(child)
        return child

    yield start
    for child in children:
        child.close(force=True)


def test_a_ctrl_c_sent_the_moment_each_prompt_shows_is_never_lost(program):
    # The prompt is written, then readline waits in select(): a Ctrl-C that lands in between
    # used to be taken by the write and lost until the next key. 60 of them, each sent as soon
    # as the prompt's first byte shows, give 60 interrupts.
    child = program("plain")
    for number in range(60):
        child.expect_exact(f"p{number}")
        child.sendintr()
        child.expect_exact(f"interrupt {number + 1}")
    child.expect_exact("p60> ")
    child.sendline("still here")
    child.expect_exact("line 'still here'")
    child.sendeof()
    child.expect_exact("bye")


def test_a_ctrl_c_that_lands_in_a_readline_hook_is_raised_after_it(program):
    # readline swallows an exception raised in its hooks: the nudge that lands in the hook
    # must not count, the next one raises.
    child = program("hook")
    for number in range(5):
        child.expect_exact("in-hook")
        child.sendintr()
        child.expect_exact(f"interrupt {number + 1}")


def test_a_ctrl_c_typed_while_busy_waits_for_the_next_prompt_and_two_give_two(program):
    child = program("busy")
    child.expect_exact("p0> ")
    child.sendintr()
    child.expect_exact("busy")
    # Outside every interruptible block: each is counted, nothing is raised yet. (Linux merges
    # signals sent closer together than the program takes them: each is waited for.)
    child.sendintr()
    child.sendline("wait 1")
    child.expect_exact("counted 1")
    child.sendintr()
    child.sendline("wait 2")
    child.expect_exact("counted 2")
    child.sendline("done")  # the two Ctrl-Cs are raised at the next two prompts
    child.expect_exact("interrupt 2")
    child.expect_exact("busy")
    child.sendline("done")
    child.expect_exact("interrupt 3")
    child.expect_exact("busy")
    child.sendline("done")
    child.expect_exact("p3> ")
    child.sendline("typed")
    child.expect_exact("line 'typed'")
    assert "interrupt 4" not in (child.before or "")
