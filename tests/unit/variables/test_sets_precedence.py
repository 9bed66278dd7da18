"""The precedence of variable sets (``sets_model.effective`` and ``set_level``): HCP
Terraform's order, highest first — priority global, priority project, priority workspace sets,
the workspace's variables, workspace, project, global sets — and, between sets of one level,
the name first in code-point order."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from cairn.variables.sets_model import Level, effective, set_level


class V(NamedTuple):
    category: str
    key: str
    value: str


def name(v: V) -> tuple[str, str]:
    return (v.category, v.key)


def test_levels_of_sets() -> None:
    assert set_level(is_global=True, priority=True, on_workspace=False) is Level.PRIORITY_GLOBAL
    assert set_level(is_global=False, priority=True, on_workspace=False) is Level.PRIORITY_PROJECT
    assert set_level(is_global=False, priority=True, on_workspace=True) is Level.PRIORITY_WORKSPACE
    assert set_level(is_global=False, priority=False, on_workspace=True) is Level.WORKSPACE_SETS
    assert set_level(is_global=False, priority=False, on_workspace=False) is Level.PROJECT_SETS
    assert set_level(is_global=True, priority=False, on_workspace=False) is Level.GLOBAL_SETS
    # A global set counts as global even if it was applied to the workspace too.
    assert set_level(is_global=True, priority=False, on_workspace=True) is Level.GLOBAL_SETS
    order = [
        Level.PRIORITY_GLOBAL,
        Level.PRIORITY_PROJECT,
        Level.PRIORITY_WORKSPACE,
        Level.WORKSPACE_VARIABLES,
        Level.WORKSPACE_SETS,
        Level.PROJECT_SETS,
        Level.GLOBAL_SETS,
    ]
    assert sorted(order) == order


@pytest.mark.parametrize(
    ("winner", "loser"),
    [
        (Level.PRIORITY_GLOBAL, Level.PRIORITY_PROJECT),
        (Level.PRIORITY_PROJECT, Level.PRIORITY_WORKSPACE),
        (Level.PRIORITY_WORKSPACE, Level.WORKSPACE_VARIABLES),
        (Level.WORKSPACE_VARIABLES, Level.WORKSPACE_SETS),
        (Level.WORKSPACE_SETS, Level.PROJECT_SETS),
        (Level.PROJECT_SETS, Level.GLOBAL_SETS),
    ],
)
def test_a_higher_level_wins_whatever_the_names_and_order(winner: Level, loser: Level) -> None:
    win, lose = V("terraform", "k", "win"), V("terraform", "k", "lose")
    for candidates in (
        [(winner, "z", win), (loser, "a", lose)],
        [(loser, "a", lose), (winner, "z", win)],
    ):
        assert effective(candidates, name) == [win]


def test_between_sets_of_one_level_the_first_name_in_code_point_order_wins() -> None:
    a, b, lower = V("env", "K", "A"), V("env", "K", "B"), V("env", "K", "lower")
    got = effective([(Level.PROJECT_SETS, "B_set", b), (Level.PROJECT_SETS, "A_set", a)], name)
    assert got == [a]
    # Code points, not case-folding: "Z" (0x5A) comes before "a" (0x61).
    got = effective([(Level.PROJECT_SETS, "a", lower), (Level.PROJECT_SETS, "Z", b)], name)
    assert got == [b]


def test_categories_do_not_conflict_and_the_order_is_terraform_then_env_by_key() -> None:
    tf_b = V("terraform", "b", "1")
    tf_a = V("terraform", "a", "2")
    env_a = V("env", "a", "3")
    got = effective(
        [
            (Level.GLOBAL_SETS, "g", env_a),
            (Level.WORKSPACE_VARIABLES, "", tf_b),
            (Level.GLOBAL_SETS, "g", tf_a),
        ],
        name,
    )
    assert got == [tf_a, tf_b, env_a]
    assert effective([], name) == []
