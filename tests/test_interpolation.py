"""`{name}` interpolation of %%gemma prompts: references only, never evaluated code."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gemma_lab.errors import InputError
from gemma_lab.magics import as_text, interpolate


class Result:
    """Stands in for a Generation: interpolates as its `.text`, not its repr."""

    text = "Paris"

    def __repr__(self) -> str:
        return "<Result object>"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain text", "plain text"),
        ("{city}", "Paris"),
        ("The capital is {city}.", "The capital is Paris."),
        ("{ city }", "Paris"),
        ("{{city}}", "{city}"),
        ("{{ {city} }}", "{ Paris }"),
        ("def f(): return {{'a': 1}}", "def f(): return {'a': 1}"),
        ("{obj.name}", "ada"),
        ("{obj.inner.value}", "42"),
        ("{rows[0]} {rows[-1]}", "first last"),
        ('{d["k"]} {d[\'k\']}', "v v"),
        ('{d["}"]}', "brace"),
        ("{Out[3]}", "from Out"),
        ("{Out[4]}", "Paris"),
        ("{result}", "Paris"),
        ("{number}", "3.5"),
        ("{grid[1][0]}", "c"),
        ("", ""),
        ("line one\n{city}\nline three", "line one\nParis\nline three"),
    ],
)
def test_references_are_replaced_by_their_text(template, expected):
    namespace = {
        "city": "Paris",
        "obj": SimpleNamespace(name="ada", inner=SimpleNamespace(value=42)),
        "rows": ["first", "middle", "last"],
        "d": {"k": "v", "}": "brace"},
        "Out": {3: "from Out", 4: Result()},
        "result": Result(),
        "number": 3.5,
        "grid": [["a", "b"], ["c", "d"]],
    }
    assert interpolate(template, namespace) == expected


def test_dataframe_column_indexing():
    pandas = pytest.importorskip("pandas")
    df = pandas.DataFrame({"text": ["first row", "second row"]})
    assert interpolate("Summarise: {df.text[1]}", {"df": df}) == "Summarise: second row"


def test_unknown_names_are_all_listed_at_once():
    with pytest.raises(InputError) as err:
        interpolate("{beta} and {alpha.x} and {beta[0]} and {known}", {"known": 1})
    message = str(err.value)
    assert "Unknown names in the prompt: alpha, beta." in message
    assert "--no-interpolate" in message and "\n" not in message


def test_one_unknown_name_is_named():
    with pytest.raises(InputError, match=r"Unknown name in the prompt: missing\. Define it"):
        interpolate("{missing}", {})


@pytest.mark.parametrize(
    "field",
    [
        "{__import__('os')}",
        "{a+b}",
        "{f()}",
        "{obj.method()}",
        "{d[k]}",
        "{rows[1:2]}",
        "{rows[0.5]}",
        "{x if y else z}",
        "{lambda: 1}",
        "{[1, 2]}",
        '{"literal"}',
        "{obj.__class__}",
        "{obj.inner.__dict__}",
        "{x:>10}",
        "{x!r}",
        "{not valid python}",
    ],
)
def test_anything_but_a_reference_is_refused(field):
    calls = []

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return self

    namespace = {name: Spy() for name in ("a", "b", "f", "obj", "d", "k", "rows", "x", "y", "z")}
    with pytest.raises(InputError, match=r"Cannot interpolate .*only names, attribute access"):
        interpolate(f"prompt {field} end", namespace)
    assert calls == []  # refused before anything was looked up


def test_nothing_is_evaluated_for_refused_fields():
    # A real __import__ call would succeed; it must be refused, not run.
    with pytest.raises(InputError):
        interpolate("{__import__('os').system('false')}", {"__import__": __import__})


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{}", "Empty {}"),
        ("{   }", "Empty {}"),
        ("a { b", "'{' on line 1 of the prompt has no matching '}'"),
        ("line\n{\n  'json': 1\n}", "'{' on line 2"),
        ("a } b", "Unmatched '}' on line 1"),
        ("ok\nok }", "Unmatched '}' on line 2"),
    ],
)
def test_stray_braces_name_the_fix(template, message):
    with pytest.raises(InputError) as err:
        interpolate(template, {"b": 1})
    assert message in str(err.value)
    assert "Write {{ and }} for literal braces, or use --no-interpolate." in str(err.value)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{obj.missing}", "obj (SimpleNamespace) has no attribute 'missing'"),
        ("{rows[7]}", "rows (list) has no item 7"),
        ('{d["nope"]}', "d (dict) has no item 'nope'"),
        ("{Out[99]}", "Out (dict) has no item 99"),
        ("{number[0]}", "number (float) is not indexable"),
    ],
)
def test_references_that_do_not_resolve_say_why(template, message):
    namespace = {"obj": SimpleNamespace(), "rows": [1], "d": {}, "Out": {}, "number": 1.5}
    with pytest.raises(InputError) as err:
        interpolate(template, namespace)
    assert message in str(err.value)


def test_as_text_prefers_a_text_string():
    assert as_text(Result()) == "Paris"
    assert as_text(SimpleNamespace(text=3)) == "namespace(text=3)"  # non-str .text: str()
    assert as_text(12) == "12"
