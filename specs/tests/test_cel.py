"""CEL in dialogs: the activation, the extension functions, spokenDigits/Numbers, errors, templates.

Everything runs the real ``cel-expr-python`` package (cel-cpp); the activation test drives the
real engine so the names and types are the ones a live call sees. Type-checking against a
dialog's declarations: test_cel_checking.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from voicetyped.session import CallerInfo, CallSession, SipHeader
from voicetyped_runtime import engine as e
from voicetyped_runtime.state import CallState
from voicetyped_specs.dialog import cel as cel_module
from voicetyped_specs.dialog.cel import (
    ACTIVATION_NAMES,
    ACTIVATION_TYPES,
    CelCompileError,
    CelEvalError,
    Expression,
    truthy,
    type_name,
)
from voicetyped_specs.dialog.compiled import load_dialog
from voicetyped_specs.dialog.template import JsonTemplate, Template

T0 = 1_700_000_000_000


def activation(**overrides: Any) -> dict[str, Any]:
    """An activation shaped like the engine's (a speech event in state ``ask``)."""
    base: dict[str, Any] = {
        "event": "speech",
        "state": "ask",
        "turn": 2,
        "elapsed_ms": 12_500,
        "state_elapsed_ms": 3_000,
        "transcript": "My order is 4821",
        "confidence": 0.87,
        "intent": "order_status",
        "intent_score": 0.71,
        "digit": "",
        "digits": "1234",
        "timer": "",
        "timer_elapsed_ms": 0,
        "ok": True,
        "result": {"status": "shipped", "eta_days": 2, "items": [{"sku": "A1"}, {"sku": "B2"}]},
        "error": {},
        "label": "",
        "slots": {},
        "vars": {"attempts": 1, "order_id": "4821", "tags": ["vip", "new"]},
        "caller": {"id": "+15550100", "headers": {"X-Account": "acme", "From": "<sip:a@b>"}},
    }
    base.update(overrides)
    return base


def evaluate(source: str, **overrides: Any) -> Any:
    return Expression(source).evaluate(activation(**overrides))


# ---- the activation ----------------------------------------------------------


def test_documented_names_are_exactly_the_activation_names_with_their_types() -> None:
    doc = cel_module.__doc__ or ""
    table = doc.split("==================  ", 1)[1].split("Functions:", 1)[0]
    documented = dict(re.findall(r"^``(\w+)``\s+(\S+(?: \w+\))?)", table, re.MULTILINE))
    assert set(documented) == ACTIVATION_NAMES
    assert {n: t.replace(", ", ",") for n, t in documented.items() if n != "vars"} == {
        n: type_name(t).replace(", ", ",") for n, t in ACTIVATION_TYPES.items()
    }


def test_engine_activation_carries_every_documented_name() -> None:
    names = sorted(ACTIVATION_TYPES)  # and vars, read by name: vars.seen
    probe = "{" + ", ".join(f'"{n}": {n}' for n in names) + ', "vars": {"seen": vars.seen}}'

    dialog = load_dialog(
        {
            "name": "probe",
            "initial": "listen",
            "settings": {"no_input_timeout_ms": 0},
            "vars": {"seen": None},
            "states": {
                "listen": {
                    "transitions": [
                        {"event": "speech", "actions": [{"set": {"seen": probe}}], "target": "done"}
                    ]
                },
                "done": {"terminal": True},
            },
        }
    )
    engine = e.Engine(dialog)
    state = CallState(
        session=CallSession(
            session_id="probe-1",
            caller=CallerInfo(
                caller_id="+15550100",
                sip_headers=[
                    SipHeader(name="X-Account", value="acme"),
                    SipHeader(name="From", value="<sip:+15550100@carrier.example>"),
                ],
            ),
            state=dialog.initial,
        ),
        dialog=dialog.name,
        dialog_hash=dialog.content_hash,
        started_ms=T0,
        state_entered_ms=T0,
        vars=dict(dialog.spec.vars),
    )
    engine.start(state, T0)
    engine.step(state, e.SpeechStarted("u1"), T0 + 1_000)
    engine.step(
        state,
        e.Transcript("u1", "where is my order", True, 0.75, 1_000, 2_500, "order_status", 0.8),
        T0 + 2_600,
    )
    seen = state.vars["seen"]
    assert isinstance(seen, dict)
    assert sorted(seen) == sorted(ACTIVATION_NAMES)
    assert seen == {
        "caller": {
            "id": "+15550100",
            "headers": {"X-Account": "acme", "From": "<sip:+15550100@carrier.example>"},
        },
        "confidence": 0.75,
        "digit": "",
        "digits": "",
        "elapsed_ms": 2_600,
        "error": {},
        "event": "speech",
        "intent": "order_status",
        "intent_score": 0.8,
        "label": "",
        "ok": True,
        "result": None,
        "sip_status": 0,
        "slots": {},
        "state": "listen",
        "state_elapsed_ms": 2_600,
        "timer": "",
        "timer_elapsed_ms": 0,
        "transcript": "where is my order",
        "turn": 1,
        "vars": {"seen": None},
    }


# ---- conditions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "overrides", "expected"),
    [
        ('transcript.contains("order")', {}, True),
        ('transcript.contains("refund")', {}, False),
        ("confidence >= 0.8", {}, True),
        ("confidence >= 0.8", {"confidence": 0.5}, False),
        ('digit == "1"', {"digit": "1"}, True),
        ('digit == "1"', {"digit": "2"}, False),
        ("digits.size() == 4", {}, True),
        ('result.status == "shipped" && result.eta_days < 3', {}, True),
        ('result.items.exists(i, i.sku == "B2")', {}, True),
        ('result.items.all(i, i.sku.startsWith("A"))', {}, False),
        ("has(result.status)", {}, True),
        ("has(result.tracking)", {}, False),
        ("vars.attempts < 2", {}, True),
        ("vars.attempts < 2", {"vars": {"attempts": 2}}, False),
        ('"vip" in vars.tags', {}, True),
        ('caller.id.startsWith("+1555")', {}, True),
        ('caller.headers["X-Account"] == "acme"', {}, True),
        ('"X-Missing" in caller.headers', {}, False),
        ('state == "ask" && event == "speech"', {}, True),
        ("turn > 1 && elapsed_ms > 10000 && state_elapsed_ms < 5000", {}, True),
        ('intent == "order_status" && intent_score > 0.5', {}, True),
        ('intent == "agent"', {}, False),
        ('timer == "no_input" && timer_elapsed_ms >= 8000', {"timer": "no_input"}, False),
        (
            'timer == "no_input" && timer_elapsed_ms >= 8000',
            {"timer": "no_input", "timer_elapsed_ms": 8000},
            True,
        ),
        ('!ok && error.code == "not_found"', {"ok": False, "error": {"code": "not_found"}}, True),
        ('label == "confirm"', {"label": "confirm"}, True),
        ('has(slots.day) && slots.day == "Friday"', {"slots": {"day": "Friday"}}, True),
        ("has(slots.day)", {}, False),
    ],
)
def test_condition(source: str, overrides: dict[str, Any], expected: bool) -> None:
    assert truthy(evaluate(source, **overrides)) is expected


# ---- extension functions ----------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('"Where IS my Order".lowerAscii()', "where is my order"),
        ('"shout".upperAscii()', "SHOUT"),
        ('"  padded  ".trim()', "padded"),
        ('"a,b,,c".split(",")', ["a", "b", "", "c"]),
        ('["a", "b", "c"].join("-")', "a-b-c"),
        ('"123456".split("").join(" ")', "1 2 3 4 5 6"),
        ('"colour".replace("u", "")', "color"),
        ('"hello".indexOf("l")', 2),
        ('"hello".lastIndexOf("l")', 3),
        ('"hello".substring(1, 3)', "el"),
        ('"hello".charAt(4)', "o"),
        ('"hello".reverse()', "olleh"),
        ('"hello".size()', 5),
        ('"hello".endsWith("lo")', True),
        ('"order 42".matches("^order [0-9]+$")', True),
        ('"%s has %d items".format(["order", 3])', "order has 3 items"),
        ("[1, 2, 3].map(x, x * 2)", [2, 4, 6]),
        ("[1, 2, 3].filter(x, x > 1)", [2, 3]),
        ("math.greatest(3, 9, 4)", 9),
        ("math.least([3, 9, 4])", 3),
        ("math.abs(-4)", 4),
        ("math.round(2.5)", 3.0),
        ("math.ceil(confidence)", 1.0),
        ('strings.quote("a\\"b")', '"a\\"b"'),
        ('base64.encode(b"hi")', "aGk="),
        ("cel.bind(n, vars.attempts + 1, n * n)", 4),
        ('int("41") + 1', 42),
        ("string(7) + 'x'", "7x"),
        ("double(1) / 4.0", 0.25),
    ],
)
def test_extension_function(source: str, expected: Any) -> None:
    assert evaluate(source) == expected


def test_namespaced_function_does_not_make_its_namespace_a_variable() -> None:
    # `math` is only a function namespace: used as a value it is still an unknown name.
    with pytest.raises(CelCompileError) as info:
        Expression("math.pi > 3")
    assert str(info.value) == "unknown name 'math.pi' at column 5 of 'math.pi > 3'"


@pytest.mark.parametrize(
    ("source", "function"),
    [("[3, 1, 2].sort()", "sort"), ("[1, 1].distinct()", "distinct"), ("max([1, 2])", "max")],
)
def test_functions_outside_the_libraries_are_unknown(source: str, function: str) -> None:
    # The cel-go lists/sets extensions and min/max/sum are not in cel-cpp's Python bindings:
    # a dialog using one fails validation, never a call.
    with pytest.raises(CelCompileError, match=f"^unknown function '{function}' at column "):
        Expression(source)


# ---- spokenDigits, spokenNumbers (the parser itself: test_spoken.py) ------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("spokenDigits(transcript)", "4821"),
        ("spokenDigits('four eight two one three')", "48213"),
        ("spokenDigits('double three oh five')", "3305"),
        ("spokenNumbers('two tickets for 48,213')", [2, 48213]),
        ("spokenNumbers('nothing') == []", True),
        ("spokenDigits('quatre huit deux un', 'fr')", "4821"),
    ],
)
def test_spoken_functions(source: str, expected: Any) -> None:
    assert evaluate(source) == expected


def test_spoken_functions_use_the_dialog_language() -> None:
    words = activation(transcript="quatre huit deux un")
    assert Expression("spokenDigits(transcript)", "fr").evaluate(words) == "4821"
    assert Expression("spokenDigits(transcript)", "en").evaluate(words) == ""
    # Dialogs pass settings.language to every expression they compile.
    spec = {
        "name": "fr",
        "initial": "a",
        "settings": {"language": "fr"},
        "vars": {"n": ""},
        "states": {
            "a": {
                "transitions": [
                    {
                        "event": "speech",
                        "condition": "spokenDigits(transcript).size() >= 4",
                        "actions": [{"set": {"n": "spokenDigits(transcript)"}}],
                        "target": "b",
                    }
                ]
            },
            "b": {"terminal": True},
        },
    }
    dialog = load_dialog(spec)
    transition = dialog.states["a"].transitions[0]
    assert transition.condition is not None
    assert transition.condition.evaluate(words) is True


def test_spoken_digits_in_a_condition() -> None:
    expr = Expression("spokenDigits(transcript).size() >= 4")
    assert expr.evaluate(activation(transcript="it is four eight two one")) is True
    assert expr.evaluate(activation(transcript="it is four eight")) is False


# ---- compile errors ---------------------------------------------------------------


def test_syntax_error_shows_the_expression_and_where() -> None:
    with pytest.raises(CelCompileError) as info:
        Expression('transcript.contains("order") &&')
    message = str(info.value)
    assert message.startswith("Syntax error: mismatched input '<EOF>' expecting {")
    assert message.endswith(" at column 32 of 'transcript.contains(\"order\") &&'")


def test_problems_on_later_lines_name_the_line() -> None:
    with pytest.raises(CelCompileError) as info:
        Expression('transcript.contains("order") &&\n  trnscript.size() > 2\n')
    assert str(info.value) == (
        "unknown name 'trnscript' (did you mean 'transcript'?) at line 2, column 3 of "
        "'transcript.contains(\"order\") &&\\n  trnscript.size() > 2\\n'"
    )


def test_unknown_names_are_rejected_by_name() -> None:
    with pytest.raises(CelCompileError) as info:
        Expression('trnscript == "yes" || foo > 1 || vars.x == 1')
    source = "'trnscript == \"yes\" || foo > 1 || vars.x == 1'"
    assert [str(p) for p in info.value.problems] == [
        f"unknown name 'trnscript' (did you mean 'transcript'?) at column 1 of {source}",
        f"unknown name 'foo' at column 23 of {source}",
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('result.items.exists(x, x.sku == "B2")', True),
        ("[1, 2, 3].all(n, n > 0)", True),
        ("[1, 2, 3].exists_one(n, n == 2)", True),
        ("vars.tags.map(t, t.upperAscii())", ["VIP", "NEW"]),
        ('vars.tags.filter(tag, tag.startsWith("n")).size()', 1),
        ("[[1], [2]].exists(inner, inner.exists(x, x > 1))", True),
    ],
)
def test_comprehension_variables_are_accepted(source: str, expected: Any) -> None:
    assert Expression(source).evaluate(activation()) == expected


def test_free_name_inside_a_comprehension_is_still_rejected() -> None:
    with pytest.raises(CelCompileError, match=r"^unknown name 'limit' at column 22 of "):
        Expression("[1, 2].exists(x, x > limit)")


def test_outside_a_dialog_vars_is_an_unchecked_map() -> None:
    expr = Expression('vars.a + vars["b"] > 0 && (has(vars.c) ? vars.c : 0) == 0')
    assert expr.evaluate({"vars": {"a": 1, "b": 2}}) is True
    assert expr.evaluate({"vars": {"a": 1, "b": 2, "c": 5}}) is False


# ---- evaluation errors -----------------------------------------------------------


def test_missing_key_is_an_evaluation_error() -> None:
    with pytest.raises(CelEvalError) as info:
        evaluate("vars.missing == 1")
    assert str(info.value) == "'vars.missing == 1': no such key: \"missing\""


def test_missing_map_entry_is_an_evaluation_error() -> None:
    with pytest.raises(CelEvalError, match=r'no such key: "X-Missing"'):
        evaluate('caller.headers["X-Missing"] == ""')


@pytest.mark.parametrize(
    ("source", "overrides", "fragment"),
    [
        # vars is dyn outside a dialog: the checker cannot see the int.
        ("vars.attempts + transcript", {}, "No matching overloads found : _+_(int64, string)"),
        ("1 / (turn - 2)", {}, "divide by zero"),
        ("result.status", {"result": None}, "Applying SELECT to non-message type"),
    ],
)
def test_evaluation_errors(source: str, overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(CelEvalError) as info:
        evaluate(source, **overrides)
    assert str(info.value).startswith(f"{source!r}: {fragment}")


@pytest.mark.parametrize(
    ("source", "description"),
    [
        ("transcript", "str 'My order is 4821'"),
        ("turn", "int 2"),
        ("confidence", "float 0.87"),
        ("result", "dict"),
        ("null", "NoneType None"),
    ],
)
def test_non_bool_condition_is_an_error(source: str, description: str) -> None:
    with pytest.raises(CelEvalError, match=r"^condition produced ") as info:
        truthy(evaluate(source))
    assert str(info.value).startswith(f"condition produced {description}")
    assert str(info.value).endswith(", not a bool")


def test_bool_conditions_pass_through() -> None:
    assert truthy(True) is True
    assert truthy(False) is False


# ---- templates ------------------------------------------------------------------


def test_template_interpolates_text() -> None:
    tpl = Template("Order {{ vars.order_id }} is {{ result.status }}; ETA {{ result.eta_days }}d.")
    assert tpl.render(activation()) == "Order 4821 is shipped; ETA 2d."
    assert [x.source for x in tpl.expressions] == [
        "vars.order_id",
        "result.status",
        "result.eta_days",
    ]


def test_template_without_expressions_is_literal() -> None:
    assert Template("Just text, no {braces}.").render({}) == "Just text, no {braces}."


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ result.eta_days }}", 2),
        ("{{ result.items }}", [{"sku": "A1"}, {"sku": "B2"}]),
        (
            "{{ result }}",
            {"status": "shipped", "eta_days": 2, "items": [{"sku": "A1"}, {"sku": "B2"}]},
        ),
        ("{{ ok }}", True),
        ("{{ confidence }}", 0.87),
        ("{{ 2.0 }}", 2.0),
        ("{{ null }}", None),
        ("  {{ vars.order_id }}  ", "  4821  "),
    ],
)
def test_whole_expression_template_keeps_the_type(source: str, expected: Any) -> None:
    value = Template(source).render(activation())
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x{{ 2.0 }}", "x2"),
        ("x{{ 4.0 / 2.0 }}", "x2"),
        ("x{{ 2.5 }}", "x2.5"),
        ("x{{ 7 }}", "x7"),
        ("x{{ true }}", "xtrue"),
        ("x{{ null }}", "x"),
        ('x{{ [1, "a"] }}', 'x[1, "a"]'),
        ('x{{ {"a": 1.0} }}', 'x{"a": 1.0}'),
    ],
)
def test_values_render_as_text(source: str, expected: str) -> None:
    assert Template(source).render(activation()) == expected


def test_render_text_of_a_whole_expression_is_text() -> None:
    assert Template("{{ 2.0 }}").render_text({}) == "2"
    assert Template("{{ result.eta_days }}").render_text(activation()) == "2"
    assert Template("{{ ok }}").render_text(activation()) == "true"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("hello {{ }}", "empty {{ }} in template 'hello {{ }}'"),
        ("hello {{ transcript", "unclosed {{ in template 'hello {{ transcript'"),
    ],
)
def test_malformed_templates(source: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Template(source)


def test_template_expression_compile_errors_surface() -> None:
    with pytest.raises(CelCompileError, match=r"^unknown name 'nme' at column 1 of 'nme'$"):
        Template("Hi {{ nme }}")


def test_template_evaluation_error() -> None:
    with pytest.raises(CelEvalError, match=r'no such key: "nope"'):
        Template("{{ vars.nope }}").render(activation())


def test_json_template_payload() -> None:
    tpl = JsonTemplate(
        {
            "order_id": "{{ vars.order_id }}",
            "attempt": "{{ vars.attempts + 1 }}",
            "note": "caller {{ caller.id }} said {{ transcript }}",
            "items": "{{ result.items.map(i, i.sku) }}",
            "nested": {"flags": ["{{ ok }}", "literal", 3, None, False], "eta": "{{ 2.0 }}"},
            "plain": "no expression here",
            "count": 5,
        }
    )
    assert [x.source for x in tpl.expressions] == [
        "vars.order_id",
        "vars.attempts + 1",
        "caller.id",
        "transcript",
        "result.items.map(i, i.sku)",
        "ok",
        "2.0",
    ]
    assert tpl.render(activation()) == {
        "order_id": "4821",
        "attempt": 2,
        "note": "caller +15550100 said My order is 4821",
        "items": ["A1", "B2"],
        "nested": {"flags": [True, "literal", 3, None, False], "eta": 2.0},
        "plain": "no expression here",
        "count": 5,
    }


def test_json_template_compile_error() -> None:
    with pytest.raises(CelCompileError, match=r"^Syntax error: .* at column 4 of '1 \+'$"):
        JsonTemplate({"a": ["ok", {"b": "{{ 1 + }}"}]})
