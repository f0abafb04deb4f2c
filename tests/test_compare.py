"""Several student families side by side per scene (``student.compare``): the config, the job's settings and
the order in which the evaluation scores them."""

import pytest

from r2l.core.config import compared_families, family_section
from r2l.core.errors import R2LError
from r2l.stages.evaluate import evaluation_order
from r2l.stages.student import distill_config_from_dict


def test_compare_names_other_known_families_once():
    assert distill_config_from_dict({"family": "grid", "compare": ["r2l"]}).compare == ("r2l",)
    assert distill_config_from_dict({"family": "grid"}).compare == ()
    for bad in (["grid"], ["r2l", "r2l"], ["mlp"]):
        with pytest.raises(R2LError, match="compare|unknown student family 'mlp'"):
            distill_config_from_dict({"family": "grid", "compare": bad})


def test_family_section_is_the_job_s_family_without_compare():
    section = {"family": "grid", "compare": ["r2l"], "steps": 5}
    assert family_section(section, "") == {"family": "grid", "steps": 5}
    assert family_section(section, "_r2l") == {"family": "r2l", "steps": 5}
    # adding a family to compare leaves the scene's own student's settings (and so its job) unchanged
    assert family_section({"family": "grid", "steps": 5}, "") == family_section(section, "")
    with pytest.raises(R2LError, match="'grid' is not in this scene's student.compare"):
        family_section(section, "_grid")


def test_compared_families_per_scene():
    config = {"student": {"compare": ["r2l"]}, "scenes": {"a": {}, "b": {"student": {"compare": []}}}}
    assert compared_families(config, "a") == ["r2l"]
    assert compared_families(config, "b") == []


def test_evaluation_order_groups_each_family():
    paths = {"finetuned_r2l": "x", "student_r2l": "x", "finetuned": "x", "teacher": "x", "student": "x"}
    assert evaluation_order(paths) == [("teacher", "teacher"), ("student", "student"), ("finetuned", "finetuned"),
                                       ("student_r2l", "student"), ("finetuned_r2l", "finetuned")]
    with pytest.raises(R2LError, match="cannot tell which model"):
        evaluation_order({"teacher": "x", "studentr2l": "x"})
