"""Broken variants of the compiled sweep: references, DAG ``depends``, loops, names, arguments.

Every variant starts from the golden ``pipelines/compiled/sweep.yaml`` (or ``sweep-cron.yaml``),
breaks one thing, and must get exactly the listed problems, no more, no fewer.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.validate_broken import Doc, _args, _problems, _task, _template


def policy(d: Doc) -> None:
    _template(d, "train")["retryStrategy"]["retryPolicy"] = "Sometimes"


def undefined_tpl(d: Doc) -> None:
    _task(d, "train")["template"] = "trian"


def undefined_onexit(d: Doc) -> None:
    d["spec"]["onExit"] = "notfiy"


def no_entry(d: Doc) -> None:
    del d["spec"]["entrypoint"]


def dep_missing(d: Doc) -> None:
    _task(d, "compare")["depends"] = "train.AnySucceeded || trian.AllFailed"


def cycle(d: Doc) -> None:
    _task(d, "plan")["depends"] = "compare"


def self_cycle(d: Doc) -> None:
    _task(d, "fetch")["depends"] = "plan && fetch"


def bad_depends(d: Doc) -> None:
    _task(d, "fetch")["depends"] = "plan &&"


def bad_result(d: Doc) -> None:
    _task(d, "fetch")["depends"] = "plan.Succeded"


def items_result(d: Doc) -> None:
    _task(d, "compare")["depends"] = "fetch.AnySucceeded"


def bad_input(d: Doc) -> None:
    a = _args(d, "train")
    a[a.index("{{inputs.parameters.trial-id}}")] = "{{inputs.parameters.trial}}"


def tasks_nope(d: Doc) -> None:
    _task(d, "train")["arguments"]["parameters"][2]["value"] = (
        "{{tasks.nope.outputs.parameters.path}}"
    )


def tasks_in_leaf(d: Doc) -> None:
    a = _args(d, "train")
    a[a.index("{{inputs.parameters.data-path}}")] = "{{tasks.fetch.outputs.parameters.path}}"


def tasks_output(d: Doc) -> None:
    _task(d, "train")["arguments"]["parameters"][3]["value"] = (
        "{{tasks.fetch.outputs.parameters.size}}"
    )


def item_task(d: Doc) -> None:
    _task(d, "compare")["arguments"] = {"parameters": [{"name": "x", "value": "{{item.id}}"}]}


def item_leaf(d: Doc) -> None:
    _template(d, "plan")["container"]["args"].append("{{item}}")


def wf_param(d: Doc) -> None:
    a = _args(d, "plan")
    a[a.index("{{workflow.parameters.sweep-id}}")] = "{{workflow.parameters.sweep}}"


def both_loops(d: Doc) -> None:
    _task(d, "train")["withItems"] = [{"id": "a", "params": "{}"}]


def task_name(d: Doc) -> None:
    _task(d, "compare")["name"] = "compare_all"


def task_digit(d: Doc) -> None:
    _task(d, "compare")["name"] = "2compare"


def tpl_name(d: Doc) -> None:
    _template(d, "notify")["name"] = "notify_"
    d["spec"]["onExit"] = "notify_"


def dup_task(d: Doc) -> None:
    _task(d, "compare")["name"] = "fetch"


def missing_arg(d: Doc) -> None:
    _task(d, "train")["arguments"]["parameters"].pop(0)


def arg_dep(d: Doc) -> None:
    _task(d, "train")["depends"] = "plan"


def status_ref(d: Doc) -> None:
    _task(d, "train")["when"] = "{{tasks.compare.status}} == Succeeded"


REFERENCE_VARIANTS: list[tuple[Callable[[Doc], None], list[str]]] = [
    (
        policy,
        [
            "spec.templates[train].retryStrategy.retryPolicy: 'Sometimes' is not a valid retry policy: one of Always, OnFailure, OnError, OnTransientError"
        ],
    ),
    (
        undefined_tpl,
        [
            "spec.templates[main].dag.tasks[2].template: no template named 'trian' (templates: <all>)"
        ],
    ),
    (
        undefined_onexit,
        ["spec.onExit: no template named 'notfiy' (templates: <all>)"],
    ),
    (
        no_entry,
        [
            "spec.entrypoint: required: name the template the workflow starts with (templates: <all>)"
        ],
    ),
    (
        dep_missing,
        [
            "spec.templates[main].dag.tasks[3].depends: depends on 'trian', which is not a task of DAG template 'main' (tasks: compare, fetch, plan, train)"
        ],
    ),
    (
        cycle,
        [
            "spec.templates[main].dag.tasks[0].depends: dependency cycle: plan -> compare -> train -> plan"
        ],
    ),
    (self_cycle, ["spec.templates[main].dag.tasks[1].depends: dependency cycle: fetch -> fetch"]),
    (
        bad_depends,
        [
            "spec.templates[main].dag.tasks[1].depends: malformed depends 'plan &&': expression is empty or ends with an operator"
        ],
    ),
    (
        bad_result,
        [
            "spec.templates[main].dag.tasks[1].depends: unknown result 'Succeded' for task 'plan' in depends (one of: Succeeded, Failed, Errored, Skipped, Omitted, Daemoned, AnySucceeded, AllFailed)"
        ],
    ),
    (
        items_result,
        [
            "spec.templates[main].dag.tasks[3].depends: fetch.AnySucceeded and fetch.AllFailed need task 'fetch' to loop (withItems, withParam or withSequence)"
        ],
    ),
    (
        bad_input,
        [
            "spec.templates[train].container.args[*]: {{inputs.parameters.trial}}: template 'train' declares no input parameter 'trial' (declared: trial-id, params, data-path, data-hash)"
        ],
    ),
    (
        tasks_nope,
        [
            "spec.templates[main].dag.tasks[2].arguments.parameters[2].value: {{tasks.nope.outputs.parameters.path}}: no task named 'nope' in DAG template 'main' (tasks: compare, fetch, plan, train)"
        ],
    ),
    (
        tasks_in_leaf,
        [
            "spec.templates[train].container.args[*]: {{tasks.fetch.outputs.parameters.path}}: "
            "template 'train' is not a DAG template; only the tasks of a DAG template can refer "
            "to tasks (pass it in as an input parameter)"
        ],
    ),
    (
        tasks_output,
        [
            "spec.templates[main].dag.tasks[2].arguments.parameters[3].value: {{tasks.fetch.outputs.parameters.size}}: task 'fetch' (template 'fetch') declares no output parameter 'size' (declared: path, hash)"
        ],
    ),
    (
        item_task,
        [
            "spec.templates[main].dag.tasks[3].arguments.parameters[0].value: {{item.id}} used outside a loop: only a task or step with withItems, withParam or withSequence has an item"
        ],
    ),
    (
        item_leaf,
        [
            "spec.templates[plan].container.args[*]: {{item}} used outside a loop: only a task or step with withItems, withParam or withSequence has an item"
        ],
    ),
    (
        wf_param,
        [
            "spec.templates[plan].container.args[*]: {{workflow.parameters.sweep}}: workflow parameter 'sweep' is not declared in spec.arguments.parameters (declared: sweep-id)"
        ],
    ),
    (
        both_loops,
        [
            "spec.templates[main].dag.tasks[2]: only one of withItems, withParam, withSequence may be set (found withItems, withParam)"
        ],
    ),
    (
        task_name,
        [
            "spec.templates[main].dag.tasks[3].name: invalid task name 'compare_all': must consist of alphanumeric characters or '-', start with an alphanumeric character and be at most 128 characters"
        ],
    ),
    (
        task_digit,
        [
            "spec.templates[main].dag.tasks[3].name: task name '2compare' cannot begin with a digit when depends or dependencies are used"
        ],
    ),
    (
        tpl_name,
        [
            "spec.templates[notify_].name: invalid template name 'notify_': must consist of alphanumeric characters or '-', start with an alphanumeric character and be at most 128 characters"
        ],
    ),
    (dup_task, ["spec.templates[main].dag.tasks[3].name: task name 'fetch' is not unique"]),
    (
        missing_arg,
        [
            "spec.templates[main].dag.tasks[2].arguments: template 'train' needs input parameter 'trial-id', which this task does not pass"
        ],
    ),
    (
        arg_dep,
        [
            "spec.templates[main].dag.tasks[2].arguments.parameters[2].value: {{tasks.fetch.outputs.parameters.path}} reads an output of task 'fetch', but task 'train' does not depend on 'fetch': add it to depends",
            "spec.templates[main].dag.tasks[2].arguments.parameters[3].value: {{tasks.fetch.outputs.parameters.hash}} reads an output of task 'fetch', but task 'train' does not depend on 'fetch': add it to depends",
        ],
    ),
    (
        status_ref,
        [
            "spec.templates[main].dag.tasks[2].when: {{tasks.compare.status}}: task 'compare' is not a dependency of this task; add it to depends"
        ],
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), REFERENCE_VARIANTS, ids=lambda v: getattr(v, "__name__", "")
)
def test_broken_sweep_references(mutate: Callable[[Doc], None], expected: list[str]) -> None:
    assert _problems("sweep.yaml", mutate) == expected
