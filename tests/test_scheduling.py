"""How tests/conftest.py hands test files to xdist's workers: each file a unit (the
conformance suite one per provider), the longest first by tests/unit_seconds.json."""

from __future__ import annotations

from conftest import UNIT_SECONDS, longest_first, read_unit_seconds, work_unit


def test_units_are_files_and_the_conformance_suite_per_provider() -> None:
    assert work_unit("tests/test_client.py::test_x[a]") == "tests/test_client.py"
    suite = "tests/conformance/test_conformance.py"
    assert work_unit(f"{suite}::test_x[azureml]") == f"{suite}[azureml]"
    assert work_unit(f"{suite}::test_x") == suite


def test_the_longest_unit_goes_first_and_an_unrecorded_one_counts_its_tests() -> None:
    units = {"a.py": ["t"] * 3, "b.py": ["t"], "new.py": ["t"] * 30, "c.py": ["t"] * 2}
    seconds = {"a.py": 2.0, "b.py": 40.0, "c.py": 2.0}
    # new.py: 30 tests at 0.5 s; a.py and c.py tie and keep the order they came in.
    assert longest_first(units, seconds) == ["b.py", "new.py", "a.py", "c.py"]


def test_the_recorded_seconds_name_units_of_this_suite() -> None:
    recorded = read_unit_seconds()
    assert recorded, f"{UNIT_SECONDS} is missing or unreadable"
    root = UNIT_SECONDS.parent.parent
    for unit, seconds in recorded.items():
        assert seconds >= 0, unit
        assert (root / unit.split("[", 1)[0]).is_file(), (
            f"{unit}: no such test file; rename or drop it in {UNIT_SECONDS.name}, or record "
            "them all again: pytest -n 4 --dist loadfile --record-unit-seconds"
        )
