"""CEL type-checking at validation: declared vars, the activation's types, the functions.

Each test loads a whole dialog the way ``voicetyped dialog validate`` does and compares the
exact issues a user sees.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from voicetyped_specs.dialog import compiled as c
from voicetyped_specs.dialog.cel import CelEnv, Expression, VarType
from voicetyped_specs.dialog.compiled import DialogError, load_dialog
from voicetyped_testkit.dialogs import issues, load


def one_transition(vars_: dict[str, Any], **transition: Any) -> dict[str, Any]:
    """A dialog whose state ``ask`` has one speech transition (``condition``, ``actions``)."""
    return {
        "name": "t",
        "initial": "ask",
        "vars": vars_,
        "states": {
            "ask": {"transitions": [{"event": "speech", **transition, "target": "done"}]},
            "done": {"terminal": True},
        },
    }


def problems(dialog: dict[str, Any]) -> list[str]:
    with pytest.raises(DialogError) as info:
        load_dialog(dialog)
    return [str(i) for i in info.value.issues]


# The pharmacy refill line of issue 19: a retry counter only `set`, never declared.
RETRY_COUNTER = """
name: refill
initial: ask
vars: {rx: ""}
states:
  ask:
    on_enter:
      - play_tts: {text: "Your prescription number, please."}
    transitions:
      - event: digits
        actions: [{set: {rx: digits}}]
        target: lookup
      - event: timeout
        actions: [{set: {retries: 'vars.retries + 1'}}]
        target: retry
  retry:
    transitions:
      - event: speech
        condition: 'vars.retries < 3'
        target: ask
      - {event: speech, target: goodbye}
  lookup:
    on_enter:
      - play_tts: {text: "Looking up {{ vars.rx | digits }}."}
    terminal: true
  goodbye: {terminal: true}
"""


def test_a_variable_only_set_is_read_before_it_has_a_value() -> None:
    read_at_set = "states.ask.transitions[1].actions[0].set.retries"
    assert issues(RETRY_COUNTER) == [
        f"{read_at_set}: vars.retries is read but never declared under vars: (it is set at "
        f"{read_at_set}); declare it with an initial value",
        "states.retry.transitions[0].condition: vars.retries is read but never declared under "
        f"vars: (it is set at {read_at_set}); declare it with an initial value",
    ]


def test_declaring_the_counter_fixes_it() -> None:
    dialog = load(RETRY_COUNTER.replace('vars: {rx: ""}', 'vars: {rx: "", retries: 0}'))
    action = dialog.states["ask"].transitions[1].actions[0]
    assert isinstance(action, c.SetVars)
    assert [(a.var, str(a.type)) for a in action.assignments] == [("retries", "int")]


def test_a_variable_set_and_never_read_must_be_declared_too() -> None:
    assert issues(
        """
        name: t
        initial: ask
        states:
          ask:
            transitions:
              - {event: speech, actions: [{set: {said: transcript}}], target: done}
              - {event: dtmf, actions: [{set: {said: digit}}], target: done}
          done: {terminal: true}
        """
    ) == [
        f"states.ask.transitions[{i}].actions[0].set.said: vars.said is set but not declared "
        "under vars:; declare it with an initial value (it gives the variable its type)"
        for i in (0, 1)
    ]


def test_a_misspelt_variable_suggests_the_declared_one() -> None:
    assert problems(one_transition({"retries": 0}, condition="vars.retires < 3")) == [
        "states.ask.transitions[0].condition: vars.retires is not declared under vars: (did you "
        "mean vars.retries?); declare it with an initial value"
    ]


def test_a_misspelt_activation_name_is_an_unknown_name() -> None:
    assert problems(one_transition({}, condition='transcrip.contains("yes")')) == [
        "states.ask.transitions[0].condition: unknown name 'transcrip' (did you mean "
        "'transcript'?) at column 1 of 'transcrip.contains(\"yes\")'"
    ]


@pytest.mark.parametrize(
    ("vars_", "source", "message"),
    [
        (
            {"name": ""},
            "vars.name + 1 > 2",
            "found no matching overload for '_+_' applied to '(string, int)' at column 11 of "
            "'vars.name + 1 > 2'",
        ),
        (
            {},
            "turn > 1.5",
            "found no matching overload for '_>_' applied to '(int, double)' at column 6 of "
            "'turn > 1.5'",
        ),
        (
            {},
            'confidence > 0.5 && transcript.size() > "2"',
            "found no matching overload for '_>_' applied to '(int, string)' at column 39 of "
            "'confidence > 0.5 && transcript.size() > \"2\"'",
        ),
        (
            {},
            "error.code + 1 == 2",
            "found no matching overload for '_+_' applied to '(string, int)' at column 12 of "
            "'error.code + 1 == 2'",
        ),
        (
            {},
            "ok == 1",
            "found no matching overload for '_==_' applied to '(bool, int)' at "
            "column 4 of 'ok == 1'",
        ),
        (
            {},
            "spokenDigits(turn) == ''",
            "found no matching overload for 'spokenDigits' "
            "applied to '(int)' at column 13 of \"spokenDigits(turn) == ''\"",
        ),
    ],
)
def test_type_mismatches_are_errors_with_their_column(
    vars_: dict[str, Any], source: str, message: str
) -> None:
    assert problems(one_transition(vars_, condition=source)) == [
        f"states.ask.transitions[0].condition: {message}"
    ]


def test_a_condition_must_be_a_bool() -> None:
    assert issues(
        """
        name: t
        initial: ask
        states:
          ask:
            transitions:
              - {event: dtmf, condition: digit, target: done}
              - {event: dtmf, condition: 'result.ready', target: done}
          done: {terminal: true}
        """
    ) == ["states.ask.transitions[0].condition: a condition is a bool; 'digit' is string"]


@pytest.mark.parametrize(
    ("initial", "value", "message"),
    [
        (
            "0",
            "vars.n + 0.5",
            "found no matching overload for '_+_' applied to '(int, double)' at column 8 of "
            "'vars.n + 0.5'",
        ),
        (
            "0",
            "1.5",
            "'1.5' is double, but vars.n is int (declared 0 under vars:); CEL does not convert "
            "between int and double: declare a double with a decimal point (0.0), or convert "
            "with int(...) or double(...)",
        ),
        (
            "0.0",
            "vars.n + 1",
            "found no matching overload for '_+_' applied to '(double, int)' at column 8 of "
            "'vars.n + 1'",
        ),
        ('""', "turn", "'turn' is int, but vars.n is string (declared \"\" under vars:)"),
        (
            "[]",
            "transcript",
            "'transcript' is string, but vars.n is list(dyn) (declared [] under vars:)",
        ),
        (
            '["a"]',
            "[turn]",
            "'[turn]' is list(int), but vars.n is list(string) (declared [\"a\"] under vars:)",
        ),
        ('""', "null", "'null' is null, but vars.n is string (declared \"\" under vars:)"),
    ],
)
def test_a_set_value_must_fit_the_declared_type(initial: str, value: str, message: str) -> None:
    dialog = one_transition({"n": yaml.safe_load(initial)}, actions=[{"set": {"n": value}}])
    assert problems(dialog) == [f"states.ask.transitions[0].actions[0].set.n: {message}"]


@pytest.mark.parametrize(
    ("initial", "value"),
    [
        ("0", "vars.n + 1"),
        ("0", "int(transcript)"),
        ("0", "result.count"),  # dyn: checked when it is assigned (VarType.admit)
        ("0.0", "double(turn) / 2.0"),
        ("0.0", "confidence"),
        ('""', 'transcript + " " + digits'),
        ("[]", "vars.n + [turn]"),
        ('["a"]', "vars.n + [transcript]"),
        ('["a"]', "[]"),
        ("{}", "slots"),
        ("{}", '{"a": turn}'),
        ("null", "turn"),
        ("null", "transcript"),
        ("false", "ok && turn > 1"),
    ],
)
def test_set_values_that_fit(initial: str, value: str) -> None:
    load_dialog(one_transition({"n": yaml.safe_load(initial)}, actions=[{"set": {"n": value}}]))


def test_has_of_a_declared_variable_is_always_true() -> None:
    assert issues(
        """
        name: t
        initial: ask
        vars: {nickname: "", count: 0}
        states:
          ask:
            on_enter:
              - play_tts: {text: "{{ has(vars.nickname) ? vars.nickname : 'friend' }}"}
            transitions:
              - {event: speech, condition: 'vars.count > 1 && has(vars.count)', target: done}
          done: {terminal: true}
        """
    ) == [
        "states.ask.on_enter[0].play_tts.text: has(vars.nickname) is always true: vars.nickname "
        "is declared under vars: and always has a value (test its value instead) at column 1 of "
        "\"has(vars.nickname) ? vars.nickname : 'friend'\"",
        "states.ask.transitions[0].condition: has(vars.count) is always true: vars.count is "
        "declared under vars: and always has a value (test its value instead) at column 19 of "
        "'vars.count > 1 && has(vars.count)'",
    ]


def test_has_of_a_field_inside_a_variable_is_a_real_test() -> None:
    dialog = load_dialog(one_transition({"customer": {}}, condition="has(vars.customer.name)"))
    condition = dialog.states["ask"].transitions[0].condition
    assert condition is not None
    assert condition.evaluate({"vars": {"customer": {}}}) is False
    assert condition.evaluate({"vars": {"customer": {"name": "Ada"}}}) is True


def test_every_problem_of_every_expression_in_one_run() -> None:
    assert issues(
        """
        name: t
        initial: ask
        vars: {name: "", tries: 0}
        states:
          ask:
            on_enter:
              - play_tts: {text: "Hi {{ vars.nme }}, {{ vars.tries + 'x' }} and {{ trnscript }}"}
              - call_hook:
                  service: s
                  method: m
                  payload: {a: "{{ vars.nam }}", b: ["{{ vars.tries + 1.0 }}"]}
            transitions:
              - {event: speech, condition: 'vars.tries > "1" || foo', target: done}
          done: {terminal: true}
        """
    ) == [
        "states.ask.on_enter[0].play_tts.text: found no matching overload for '_+_' applied to "
        "'(int, string)' at column 12 of \"vars.tries + 'x'\"",
        "states.ask.on_enter[0].play_tts.text: unknown name 'trnscript' (did you mean "
        "'transcript'?) at column 1 of 'trnscript'",
        "states.ask.on_enter[1].call_hook.payload: found no matching overload for '_+_' applied "
        "to '(int, double)' at column 12 of 'vars.tries + 1.0'",
        "states.ask.transitions[0].condition: found no matching overload for '_>_' applied to "
        "'(int, string)' at column 12 of 'vars.tries > \"1\" || foo'",
        "states.ask.transitions[0].condition: unknown name 'foo' at column 21 of "
        "'vars.tries > \"1\" || foo'",
        "states.ask.on_enter[0].play_tts.text: vars.nme is not declared under vars: (did you "
        "mean vars.name?); declare it with an initial value",
        "states.ask.on_enter[1].call_hook.payload: vars.nam is not declared under vars: (did you "
        "mean vars.name?); declare it with an initial value",
    ]


def test_vars_as_a_whole_is_not_a_value_in_a_dialog() -> None:
    assert issues(
        """
        name: t
        initial: ask
        vars: {a: 1}
        states:
          ask:
            on_enter:
              - call_hook: {service: s, method: m, payload: {all: "{{ vars }}"}}
            terminal: true
        """
    ) == [
        "states.ask.on_enter[0].call_hook.payload: vars is not a value: read a dialog variable "
        "as vars.NAME at column 1 of 'vars'"
    ]


# ---- the declared types themselves ------------------------------------------------------


@pytest.mark.parametrize(
    ("initial", "name"),
    [
        (None, "dyn"),
        (True, "bool"),
        (0, "int"),
        (0.0, "double"),
        ("", "string"),
        ([], "list(dyn)"),
        (["a", "b"], "list(string)"),
        ([1, "a"], "list(dyn)"),
        ([[1], [2]], "list(list(int))"),
        ({}, "map(string, dyn)"),
        ({"a": 1}, "map(string, dyn)"),
    ],
)
def test_a_variable_has_its_initial_values_type(initial: Any, name: str) -> None:
    var = VarType.of(initial)
    assert str(var) == name
    # The checker sees the same type.
    expr = Expression("vars.v", CelEnv({"v": initial}))
    assert expr.type.name().lower().replace("<", "(").replace(">", ")") == name


@pytest.mark.parametrize(
    ("initial", "value", "admitted"),
    [
        (0, 3, 3),
        (0.0, 3, 3.0),  # a whole number from JSON is a double's value
        ("", "x", "x"),
        (None, {"any": ["thing"]}, {"any": ["thing"]}),
        (["a"], ["b", "c"], ["b", "c"]),
        ({}, {"k": 1}, {"k": 1}),
        (False, True, True),
    ],
)
def test_values_of_the_declared_type_are_admitted(initial: Any, value: Any, admitted: Any) -> None:
    got = VarType.of(initial).admit(value)
    assert got == admitted
    assert type(got) is type(admitted)


@pytest.mark.parametrize(
    ("initial", "value", "message"),
    [
        (0, 2.5, "double 2.5, not int"),
        (0, True, "bool True, not int"),
        (0.0, "1", "string '1', not double"),
        ("", None, "null None, not string"),
        (["a"], ["b", 1], "int 1, not string"),
        ({}, [], "list(dyn) [], not map(string, dyn)"),
    ],
)
def test_values_of_another_type_are_refused(initial: Any, value: Any, message: str) -> None:
    with pytest.raises(TypeError) as info:
        VarType.of(initial).admit(value)
    assert str(info.value) == message
