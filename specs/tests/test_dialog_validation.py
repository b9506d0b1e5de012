"""Dialog validation: every problem named by path, with the exact message a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest
from voicetyped_specs.dialog.compiled import (
    DialogError,
    load_dialog_file,
    parse_yaml,
)
from voicetyped_testkit.dialogs import issues, load

CEL_TOKENS = (
    "{'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, "
    "STRING, BYTES, IDENTIFIER}"
)
ACTIONS = (
    "play_tts, transfer, hangup, call_hook, set, collect_digits, start_timer, cancel_timer, llm"
)
NO_WAY_OUT = (
    "no way out: neither its transitions nor a global transition lead to another state, hang "
    "up or transfer, and it is not terminal (add one, or `terminal: true`)"
)


# ---- graph ------------------------------------------------------------------------


def test_unknown_target_suggests_the_closest_state() -> None:
    assert issues(
        """
        name: t
        initial: ask
        states:
          ask:
            transitions:
              - event: speech
                target: goodbye
              - event: timeout
                target: godbye
          goodbye: {terminal: true}
        """
    ) == ["states.ask.transitions[1].target: unknown state 'godbye' (did you mean 'goodbye'?)"]


def test_unknown_target_without_a_close_name() -> None:
    assert issues(
        """
        name: t
        initial: ask
        states:
          ask:
            transitions:
              - {event: speech, target: done}
              - {event: dtmf, target: zzz}
          done: {terminal: true}
        """
    ) == ["states.ask.transitions[1].target: unknown state 'zzz'"]


def test_unknown_target_in_a_global_transition() -> None:
    assert issues(
        """
        name: t
        initial: ask
        global_transitions:
          - {event: error, target: apolgy}
        states:
          ask:
            transitions:
              - {event: speech, target: apology}
          apology: {terminal: true}
        """
    ) == ["global_transitions[0].target: unknown state 'apolgy' (did you mean 'apology'?)"]


def test_unknown_initial_state() -> None:
    assert issues(
        """
        name: t
        initial: greeting
        states:
          greet: {terminal: true}
        """
    ) == ["initial: unknown state 'greeting' (did you mean 'greet'?)"]


def test_unreachable_state() -> None:
    assert issues(
        """
        name: t
        initial: ask
        states:
          ask:
            transitions:
              - {event: speech, target: done}
          done: {terminal: true}
          orphan:
            transitions:
              - {event: speech, target: done}
        """
    ) == ["states.orphan: unreachable from the initial state 'ask'"]


def test_state_with_no_way_out() -> None:
    assert issues(
        """
        name: t
        initial: ask
        states:
          ask:
            on_enter:
              - play_tts: {text: "Say something"}
            transitions:
              - event: speech
                actions:
                  - play_tts: {text: "I heard you"}
              - event: timeout
                target: ask
        """
    ) == [f"states.ask: {NO_WAY_OUT}"]


def test_a_re_prompt_loop_with_a_global_way_out_is_allowed() -> None:
    dialog = load(
        """
        name: t
        initial: ask
        global_transitions:
          - {event: dtmf, condition: 'digit == "0"', target: agent}
        states:
          ask:
            on_enter:
              - play_tts: {text: "Say your order number, or press 0."}
            transitions:
              - {event: timeout, target: ask}
          agent:
            on_enter:
              - transfer: {target: "sip:agents@pbx.example.com"}
        """
    )
    assert [t.target for t in dialog.states["ask"].transitions] == ["ask"]


def test_a_re_prompt_loop_that_hangs_up_after_its_retries_is_allowed() -> None:
    dialog = load(
        """
        name: t
        initial: ask
        vars: {retries: 0}
        states:
          ask:
            on_enter:
              - play_tts: {text: "Say your prescription number."}
            transitions:
              - event: timeout
                condition: 'vars.retries < 2'
                actions:
                  - set: {retries: 'vars.retries + 1'}
                target: ask
              - event: timeout
                actions:
                  - play_tts: {text: "Please call again later."}
                  - hangup: {}
        """
    )
    assert [t.target for t in dialog.states["ask"].transitions] == ["ask", None]


def test_a_re_prompt_loop_ended_by_the_call_duration_timer_is_allowed() -> None:
    dialog = load(
        """
        name: t
        initial: ask
        global_transitions:
          - event: timeout
            timer: max_duration
            actions:
              - transfer: {target: "tel:+15550100"}
        states:
          ask:
            on_enter:
              - play_tts: {text: "Still there?"}
            transitions:
              - {event: timeout, timer: no_input, target: ask}
        """
    )
    assert dialog.global_transitions[0].timer == "max_duration"


def test_a_loop_whose_global_transitions_lead_back_to_it_is_a_trap() -> None:
    assert issues(
        """
        name: t
        initial: ask
        global_transitions:
          - {event: error, target: ask}
          - {event: dtmf, actions: [{play_tts: {text: "Keys do nothing here."}}]}
        states:
          ask:
            on_enter:
              - play_tts: {text: "Say something"}
            transitions:
              - {event: timeout, target: ask}
              - {event: speech, actions: [{play_tts: {text: "Again?"}}], target: ask}
        """
    ) == [f"states.ask: {NO_WAY_OUT}"]


def test_unreachable_and_no_way_out_together() -> None:
    assert issues(
        """
        name: t
        initial: a
        states:
          a:
            transitions:
              - {event: speech, target: b}
          b:
            transitions:
              - {event: speech, target: b}
          c: {terminal: true}
        """
    ) == ["states.c: unreachable from the initial state 'a'", f"states.b: {NO_WAY_OUT}"]


# ---- CEL and templates ---------------------------------------------------------------


def test_cel_syntax_error_shows_the_expression() -> None:
    found = issues(
        """
        name: t
        initial: ask
        states:
          ask:
            transitions:
              - event: speech
                condition: 'transcript.contains("yes") &&'
                target: done
          done: {terminal: true}
        """
    )
    assert found == [
        "states.ask.transitions[0].condition: Syntax error: mismatched input '<EOF>' expecting "
        f"{CEL_TOKENS} at column 30 of 'transcript.contains(\"yes\") &&'"
    ]


def test_cel_unknown_name_in_a_template() -> None:
    assert issues(
        """
        name: t
        initial: ask
        states:
          ask:
            on_enter:
              - play_tts: {text: "You said {{ trnscript }}"}
            terminal: true
        """
    ) == [
        "states.ask.on_enter[0].play_tts.text: unknown name 'trnscript' (did you mean "
        "'transcript'?) at column 1 of 'trnscript'"
    ]


def test_cel_error_in_a_set_and_a_payload() -> None:
    assert issues(
        """
        name: t
        initial: ask
        vars: {n: 0}
        states:
          ask:
            on_enter:
              - set: {n: 'vars.n +* 1'}
              - call_hook: {service: s, method: m, payload: {a: [1, "{{ count }}"]}}
            terminal: true
        """
    ) == [
        "states.ask.on_enter[0].set.n: Syntax error: extraneous input '*' expecting "
        f"{CEL_TOKENS} at column 9 of 'vars.n +* 1'",
        "states.ask.on_enter[1].call_hook.payload: unknown name 'count' at column 1 of 'count'",
    ]


def test_malformed_template() -> None:
    assert issues(
        """
        name: t
        initial: ask
        states:
          ask:
            on_enter:
              - play_tts: {text: "Hello {{ caller.id"}
            terminal: true
        """
    ) == ["states.ask.on_enter[0].play_tts.text: unclosed {{ in template 'Hello {{ caller.id'"]


# ---- shape ---------------------------------------------------------------------


def test_unknown_action_field() -> None:
    assert issues(
        """
        name: t
        initial: x
        states:
          x:
            on_enter:
              - play_tts: {txt: "Hello"}
            terminal: true
        """
    ) == ["states.x.on_enter[0].play_tts.txt: unknown field (did you mean 'text'?)"]


def test_unknown_field_in_a_transition_action() -> None:
    assert issues(
        """
        name: t
        initial: x
        states:
          x:
            transitions:
              - event: speech
                actions:
                  - play_tts: {text: "ok"}
                  - call_hook: {service: s, method: m, payload: {}, timeout: 5}
                target: y
          y: {terminal: true}
        """
    ) == [
        "states.x.transitions[0].actions[1].call_hook.timeout: unknown field "
        "(did you mean 'timeout_ms'?)"
    ]


def test_missing_action_field() -> None:
    assert issues(
        """
        name: t
        initial: x
        states:
          x:
            on_enter:
              - transfer: {}
            terminal: true
        """
    ) == ["states.x.on_enter[0].transfer.target: required field missing"]


def test_unknown_action_key() -> None:
    assert issues(
        """
        name: t
        initial: x
        states:
          x:
            on_enter:
              - play: {text: "Hello"}
            terminal: true
        """
    ) == [
        f"states.x.on_enter[0]: unknown action 'play' (did you mean 'play_tts'?); "
        f"expected one of {ACTIONS}"
    ]


def test_action_with_two_keys() -> None:
    assert issues(
        """
        name: t
        initial: x
        states:
          x:
            on_enter:
              - play_tts: {text: "Bye"}
                hangup: {}
            terminal: true
        """
    ) == [f"states.x.on_enter[0]: an action is a mapping with exactly one key, one of {ACTIONS}"]


def test_action_spec_rule() -> None:
    assert issues(
        """
        name: t
        initial: x
        states:
          x:
            on_enter:
              - collect_digits: {max_digits: 4, min_digits: 6}
            terminal: true
        """
    ) == ["states.x.on_enter[0].collect_digits: min_digits must not exceed max_digits"]


def test_nested_list_positions_are_indexed() -> None:
    # YAML 1.1 reads bare yes/no as booleans: the paths point at the offending labels.
    assert issues(
        """
        name: t
        initial: x
        settings:
          llm: {base_url: "http://llm:8000/v1", model: m}
        states:
          x:
            transitions:
              - event: speech
                actions:
                  - llm: {mode: classify, prompt: "Yes or no?", labels: [yes, no]}
              - {event: llm_result, target: y}
          y: {terminal: true}
        """
    ) == [
        "states.x.transitions[0].actions[0].llm.labels[0]: Input should be a valid string",
        "states.x.transitions[0].actions[0].llm.labels[1]: Input should be a valid string",
    ]


def test_unknown_field_of_a_state_and_of_the_dialog() -> None:
    assert issues(
        """
        name: t
        initial: x
        setings: {}
        states:
          x:
            terminal: true
            on_entry: []
        """
    ) == [
        "states.x.on_entry: unknown field (did you mean 'on_enter'?)",
        "setings: unknown field (did you mean 'settings'?)",
    ]


def test_unknown_event_type() -> None:
    assert issues(
        """
        name: t
        initial: x
        states:
          x:
            transitions:
              - {event: speak, target: y}
          y: {terminal: true}
        """
    ) == [
        "states.x.transitions[0].event: Input should be 'speech', 'partial', 'dtmf', 'digits', "
        "'timeout', 'backend_result', 'barge_in', 'hangup', 'error', 'llm_result' or "
        "'transfer_failed'"
    ]


# ---- references ---------------------------------------------------------------------


def test_undefined_variable() -> None:
    assert issues(
        """
        name: t
        initial: x
        vars: {order_id: "", customer: ""}
        states:
          x:
            on_enter:
              - play_tts: {text: "Order {{ vars.order_id }} for {{ vars.custmer }}"}
            terminal: true
        """
    ) == [
        "states.x.on_enter[0].play_tts.text: vars.custmer is not declared under vars: "
        "(did you mean vars.customer?); declare it with an initial value"
    ]


def test_undefined_variable_read_by_index_in_a_condition() -> None:
    assert issues(
        """
        name: t
        initial: x
        states:
          x:
            transitions:
              - {event: speech, condition: 'vars["tries"] > 1', target: y}
          y: {terminal: true}
        """
    ) == [
        "states.x.transitions[0].condition: vars is not a value: read a dialog variable as "
        "vars.NAME at column 1 of 'vars[\"tries\"] > 1'"
    ]


def test_unknown_intent() -> None:
    assert issues(
        """
        name: t
        initial: x
        intents:
          agent: [talk to a person]
          billing: [question about my bill]
        states:
          x:
            transitions:
              - {event: speech, condition: 'intent == "agnt"', target: y}
              - {event: speech, condition: '"billing" == intent', target: y}
          y: {terminal: true}
        """
    ) == ["states.x.transitions[0].condition: unknown intent 'agnt' (known: agent, billing)"]


def test_intent_used_without_intents() -> None:
    assert issues(
        """
        name: t
        initial: x
        states:
          x:
            transitions:
              - {event: speech, condition: 'intent == "agent"', target: y}
          y: {terminal: true}
        """
    ) == [
        "states.x.transitions[0].condition: unknown intent 'agent' "
        "(known: none are defined under `intents:`)"
    ]


def test_timer_never_started() -> None:
    assert issues(
        """
        name: t
        initial: x
        states:
          x:
            on_enter:
              - start_timer: {name: reminder, ms: 5000}
              - cancel_timer: {name: remindr}
            transitions:
              - {event: timeout, timer: reminder, target: y}
              - {event: timeout, timer: nag, target: y}
          y: {terminal: true}
        """
    ) == [
        "states.x.on_enter[1].cancel_timer.name: timer 'remindr' is never started",
        "states.x.transitions[1].timer: timer 'nag' is never started",
    ]


def test_builtin_timers_need_no_start() -> None:
    dialog = load(
        """
        name: t
        initial: x
        states:
          x:
            on_enter:
              - collect_digits: {max_digits: 4}
            transitions:
              - {event: timeout, timer: no_input, target: y}
              - {event: timeout, timer: collect_digits, target: y}
              - {event: timeout, timer: max_duration, target: y}
          y: {terminal: true}
        """
    )
    assert [t.timer for t in dialog.states["x"].transitions] == [
        "no_input",
        "collect_digits",
        "max_duration",
    ]


def test_builtin_timer_cannot_be_started() -> None:
    assert issues(
        """
        name: t
        initial: x
        states:
          x:
            on_enter:
              - start_timer: {name: no_input, ms: 100}
            transitions:
              - {event: timeout, target: y}
          y: {terminal: true}
        """
    ) == [
        "states.x.on_enter[0].start_timer.name: 'no_input' is a built-in timer: the runtime "
        "starts it; set its length with settings.no_input_timeout_ms (or a state's "
        "no_input_timeout_ms)"
    ]


def test_outcome_only_on_backend_result() -> None:
    assert issues(
        """
        name: t
        initial: x
        states:
          x:
            transitions:
              - {event: speech, outcome: error, target: y}
              - {event: backend_result, outcome: any, target: y}
          y: {terminal: true}
        """
    ) == ["states.x.transitions[0].outcome: only backend_result transitions have one"]


def test_timer_only_on_timeout() -> None:
    assert issues(
        """
        name: t
        initial: x
        states:
          x:
            transitions:
              - {event: dtmf, timer: no_input, target: y}
          y: {terminal: true}
        """
    ) == ["states.x.transitions[0].timer: only timeout transitions have one"]


def test_llm_action_needs_llm_settings() -> None:
    assert issues(
        """
        name: t
        initial: x
        states:
          x:
            transitions:
              - event: speech
                actions:
                  - llm: {mode: classify, prompt: "Yes or no?", labels: [confirm, deny]}
              - {event: llm_result, target: y}
          y: {terminal: true}
        """
    ) == ["states.x.transitions[0].actions[0]: llm action needs `settings.llm` (base_url, model)"]


def test_bad_transfer_uri() -> None:
    assert issues(
        """
        name: t
        initial: x
        states:
          x:
            on_enter:
              - transfer: {target: "agents@pbx.example.com"}
            terminal: true
        """
    ) == [
        "states.x.on_enter[0].transfer.target: 'agents@pbx.example.com' is not a sip:, sips: "
        "or tel: URI"
    ]


@pytest.mark.parametrize(
    "target",
    [
        "sip:agents@pbx.example.com",
        "sips:agents@pbx.example.com",
        "tel:+15550100",
        "{{ result.uri }}",
    ],
)
def test_good_transfer_uris(target: str) -> None:
    dialog = load(
        f"""
        name: t
        initial: x
        states:
          x:
            on_enter:
              - transfer: {{target: "{target}"}}
            terminal: true
        """
    )
    assert dialog.states["x"].on_enter[0].target.source == target  # type: ignore[union-attr]


# ---- YAML ----------------------------------------------------------------------


def test_yaml_syntax_error_has_line_and_column() -> None:
    with pytest.raises(DialogError) as info:
        parse_yaml("name: t\ninitial: x\nstates:\n  x: {terminal: true\n", "menu.yaml")
    assert [str(i) for i in info.value.issues] == [
        "menu.yaml: YAML error at line 5, column 1: did not find expected ',' or '}'"
    ]
    assert str(info.value) == (
        "dialog is invalid:\n"
        "  - menu.yaml: YAML error at line 5, column 1: did not find expected ',' or '}'"
    )


def test_yaml_mapping_value_error_position() -> None:
    with pytest.raises(DialogError) as info:
        parse_yaml("name: t\ninitial: x: y\n", "d.yaml")
    assert [str(i) for i in info.value.issues] == [
        "d.yaml: YAML error at line 2, column 11: mapping values are not allowed in this context"
    ]


def test_yaml_that_is_not_a_mapping() -> None:
    with pytest.raises(DialogError) as info:
        parse_yaml("- a\n- b\n", "list.yaml")
    assert [str(i) for i in info.value.issues] == ["list.yaml: a dialog is a YAML mapping"]


def test_load_dialog_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: [\n", encoding="utf-8")
    with pytest.raises(DialogError) as info:
        load_dialog_file(path)
    assert [str(i) for i in info.value.issues] == [
        f"{path}: YAML error at line 2, column 1: did not find expected node content"
    ]


# ---- many at once ---------------------------------------------------------------------


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(DialogError) as info:
        load(
            """
            name: order-status
            initial: greet
            vars: {attempts: 0}
            intents:
              agent: [talk to a person]
            states:
              greet:
                on_enter:
                  - play_tts: {text: "Hi {{ vars.name }}"}
                  - transfer: {target: "agents"}
                transitions:
                  - {event: speech, condition: 'intent == "sales"', target: lookup}
                  - {event: dtmf, outcome: error, target: lokup}
                  - {event: timeout, timer: reminder, target: greet}
              lookup:
                transitions:
                  - {event: backend_result, condition: 'result.status ==', target: done}
              done: {terminal: true}
              orphan: {terminal: true}
            """
        )
    err = info.value
    assert err.name == "order-status"
    assert [str(i) for i in err.issues] == [
        "states.greet.on_enter[1].transfer.target: 'agents' is not a sip:, sips: or tel: URI",
        "states.greet.transitions[1].outcome: only backend_result transitions have one",
        "states.greet.transitions[1].target: unknown state 'lokup' (did you mean 'lookup'?)",
        "states.lookup.transitions[0].condition: Syntax error: mismatched input '<EOF>' "
        f"expecting {CEL_TOKENS} at column 17 of 'result.status =='",
        "states.orphan: unreachable from the initial state 'greet'",
        "states.greet.on_enter[0].play_tts.text: vars.name is not declared under vars:; "
        "declare it with an initial value",
        "states.greet.transitions[2].timer: timer 'reminder' is never started",
        "states.greet.transitions[0].condition: unknown intent 'sales' (known: agent)",
    ]
    assert str(err).startswith("dialog 'order-status' is invalid:\n  - states.greet.on_enter[1]")
    assert str(err).count("\n  - ") == len(err.issues)


def test_several_shape_problems_are_reported_together() -> None:
    assert issues(
        """
        name: Bad Name
        initial: a
        states:
          a:
            on_enter:
              - play_tts: {text: "hi", barge_in: sometimes}
            terminal: true
          b:
            on_enter:
              - hangup: {reason_code: 200}
            terminal: true
        """
    ) == [
        "name: String should match pattern '^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$'",
        "states.a.on_enter[0].play_tts.barge_in: Input should be 'allow', 'deny' or 'immediate'",
        "states.b.on_enter[0].hangup.reason_code: Input should be less than or equal to 127",
    ]


# ---- valid edge cases ----------------------------------------------------------------


def test_global_transitions_make_states_reachable() -> None:
    dialog = load(
        """
        name: t
        initial: menu
        global_transitions:
          - {event: dtmf, condition: 'digit == "0"', target: operator}
          - {event: error, target: sorry}
        states:
          menu:
            on_enter:
              - play_tts: {text: "Press 0 for the operator."}
          operator:
            on_enter:
              - transfer: {target: "sip:operator@pbx.example.com"}
          sorry:
            on_enter:
              - play_tts: {text: "Sorry."}
            terminal: true
        """
    )
    assert set(dialog.states) == {"menu", "operator", "sorry"}
    assert [t.target for t in dialog.global_transitions] == ["operator", "sorry"]


def test_hangup_or_transfer_on_enter_needs_no_transition() -> None:
    dialog = load(
        """
        name: t
        initial: ask
        states:
          ask:
            transitions:
              - {event: speech, target: bye}
              - {event: dtmf, target: agent}
          bye:
            on_enter:
              - play_tts: {text: "Goodbye"}
              - hangup: {reason_code: 16}
          agent:
            on_enter:
              - transfer: {target: "tel:+15550100"}
        """
    )
    assert not dialog.states["bye"].terminal
    assert not dialog.states["bye"].transitions


def test_comprehension_variables_are_not_unknown_names() -> None:
    dialog = load(
        """
        name: t
        initial: ask
        states:
          ask:
            transitions:
              - event: backend_result
                condition: 'result.items.exists(x, x > 1) && result.items.all(item, item < 9)'
                target: done
          done: {terminal: true}
        """
    )
    condition = dialog.states["ask"].transitions[0].condition
    assert condition is not None
    assert condition.evaluate({"result": {"items": [1, 5]}}) is True
    assert condition.evaluate({"result": {"items": [1, 10]}}) is False


def test_content_hash_ignores_formatting_but_not_content() -> None:
    a = load("name: t\ninitial: x\nstates: {x: {terminal: true}}\n")
    b = load(
        """
        # same dialog, other layout
        name: t
        initial: x
        states:
          x:
            terminal: true
        """
    )
    c = load("name: t\ninitial: x\ndescription: other\nstates: {x: {terminal: true}}\n")
    assert a.content_hash == b.content_hash
    assert a.content_hash != c.content_hash


def test_endpointing_is_checked_with_its_field_path() -> None:
    assert issues(
        """
        name: ep
        initial: a
        settings:
          endpointing: {mode: fast, min_ms: 50}
        states:
          a:
            endpointing: {mode: semantic, min_ms: 900, max_ms: 500}
            terminal: true
        """
    ) == [
        "settings.endpointing.mode: Input should be 'semantic' or 'silence'",
        "settings.endpointing.min_ms: Input should be greater than or equal to 100",
        "states.a.endpointing.max_ms: must be at least min_ms (900)",
    ]
