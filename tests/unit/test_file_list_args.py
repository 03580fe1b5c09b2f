"""``--outcomes A B C``: the file-list options take every file up to the next option."""

from __future__ import annotations

from router.cli.classifier_cmds import spread_file_lists


def test_files_after_one_flag_get_a_flag_each() -> None:
    args = ["--outcomes", "a.jsonl", "b.jsonl", "c.jsonl", "--out", "m", "--seed", "3"]
    assert spread_file_lists(args) == [
        "--outcomes",
        "a.jsonl",
        "--outcomes",
        "b.jsonl",
        "--outcomes",
        "c.jsonl",
        "--out",
        "m",
        "--seed",
        "3",
    ]


def test_repeated_flags_and_single_files_are_left_alone() -> None:
    args = ["--out", "m", "--outcomes", "a.jsonl", "--outcomes", "b.jsonl", "--no-refit"]
    assert spread_file_lists(args) == args


def test_the_equals_form_and_each_list_option() -> None:
    args = ["--outcomes=a", "b", "--train-outcomes", "t1", "t2", "--plus", "p1", "p2"]
    assert spread_file_lists(args) == [
        "--outcomes=a",
        "--outcomes",
        "b",
        "--train-outcomes",
        "t1",
        "--train-outcomes",
        "t2",
        "--plus",
        "p1",
        "--plus",
        "p2",
    ]


def test_other_options_values_are_not_taken_as_files() -> None:
    # a stray argument after a non-list option stays stray, so click still refuses it
    args = ["--model", "m", "stray", "--outcomes", "a", "--", "b"]
    assert spread_file_lists(args) == args
