"""A short seeded fuzzing run of every input surface (``hyperbagel bench fuzz`` runs 1,000 inputs each): no input
may end in a stack trace. And the classifier itself: a deliberate error is clear, an accidental one is a trace."""

import pytest

from hyperbagel.errors import HyperBagelError
from hyperbagel.eval.fuzz import SURFACES, fuzz, outcome_of

pytest.importorskip("hypothesis")


def test_outcomes_tell_deliberate_errors_from_accidents():
    def accident():
        return [][1]

    def outside():
        raise ValueError("raised here, outside the package")

    def check():
        from hyperbagel.flow.guidance import GuidanceConfig

        return GuidanceConfig(text_scale=-1.0)  # the package's own check: a deliberate ValueError

    def told():
        raise HyperBagelError("no such folder: x")

    assert outcome_of(lambda: 1) == ("ok", "")
    assert outcome_of(told) == ("clear", "")
    assert outcome_of(check) == ("clear", "")
    assert outcome_of(outside)[0] == "trace"
    assert outcome_of(accident)[0] == "trace"
    assert outcome_of(lambda: int("x"))[0] == "trace"  # a ValueError from inside Python, not a check of ours


def test_every_surface_survives_a_short_seeded_run(micro_student_folder, micro_draft_folder, tmp_path):
    reports = fuzz(list(SURFACES), examples=25, seed=0, model_folder=micro_student_folder,
                   draft_folder=micro_draft_folder, work=tmp_path)
    for r in reports:
        assert r.tried == 25
        assert r.counts["trace"] == 0, (r.surface, r.traces)
        assert r.counts["clear"] > 0  # the surface was exercised with bad input, not only good
