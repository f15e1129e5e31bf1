"""Names of workflows and steps, and what the decorators accept."""

from __future__ import annotations

import pytest

import tether
from tether import step, workflow
from tether.registry import STEPS, WORKFLOWS


@workflow
async def greet(name: str) -> str:
    return f"hello {name}"


@step(max_retries=7)
def shout(text: str) -> str:
    return text.upper()


def test_names_are_module_and_qualname() -> None:
    assert greet.name == "workflow//tests.unit.test_registry//greet"
    assert shout.name == "step//tests.unit.test_registry//shout"
    assert WORKFLOWS[greet.name] is greet
    assert STEPS[shout.name] is shout
    assert shout.max_retries == 7


def test_parse_workflow_name() -> None:
    parsed = tether.parse_workflow_name("workflow//shop.workflows//fulfill_order")
    assert (parsed.short_name, parsed.module, parsed.function) == (
        "fulfill_order",
        "shop.workflows",
        "fulfill_order",
    )
    nested = tether.parse_workflow_name("workflow//shop//Orders.fulfill")
    assert nested.short_name == "fulfill"


@pytest.mark.parametrize(
    "bad", ["fulfill_order", "workflow//shop", "step//shop//f", "workflow////f", ""]
)
def test_bad_workflow_names_show_the_expected_form(bad: str) -> None:
    with pytest.raises(ValueError, match="expected workflow//<module>//<function>"):
        tether.parse_workflow_name(bad)


def test_workflow_must_be_async() -> None:
    def not_async() -> None:
        pass

    with pytest.raises(TypeError, match="async def"):
        workflow(not_async)  # type: ignore[arg-type]


def test_negative_retries_are_refused() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        step(max_retries=-1)(lambda: None)
