"""Broken variants of the compiled sweep: each rule of the validator, asserted on field and message.

Every variant starts from the golden ``pipelines/compiled/sweep.yaml`` (or ``sweep-cron.yaml``),
breaks one thing, and must get exactly the listed problems, no more, no fewer.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest

from pipelines.validate import validate_document
from tests.test_validate import compiled

Doc = dict[str, Any]


def _template(doc: Doc, name: str) -> Doc:
    spec = doc["spec"].get("workflowSpec", doc["spec"])
    return next(t for t in spec["templates"] if t["name"] == name)


def _task(doc: Doc, name: str) -> Doc:
    return next(t for t in _template(doc, "main")["dag"]["tasks"] if t["name"] == name)


def _args(doc: Doc, template: str) -> list[str]:
    args: list[str] = _template(doc, template)["container"]["args"]
    return args


def unknown_top(d: Doc) -> None:
    d["spec"]["entrypiont"] = "main"


def unknown_meta(d: Doc) -> None:
    d["metadata"]["lables"] = {"a": "b"}


def unknown_deep(d: Doc) -> None:
    _template(d, "train")["retryStrategy"]["backoff"]["facter"] = 2


def unknown_task(d: Doc) -> None:
    _task(d, "train")["withParams"] = "x"


def unknown_affinity(d: Doc) -> None:
    _template(d, "train")["retryStrategy"]["affinity"]["nodeAntiAffinity"]["hard"] = True


def limit_word(d: Doc) -> None:
    _template(d, "train")["retryStrategy"]["limit"] = "three"


def limit_negative(d: Doc) -> None:
    _template(d, "train")["retryStrategy"]["limit"] = -1


def limit_float(d: Doc) -> None:
    _template(d, "train")["retryStrategy"]["limit"] = 2.5


def factor_word(d: Doc) -> None:
    _template(d, "train")["retryStrategy"]["backoff"]["factor"] = "double"


def duration_bad(d: Doc) -> None:
    _template(d, "train")["retryStrategy"]["backoff"]["duration"] = "fifteen seconds"


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


def parallelism_word(d: Doc) -> None:
    d["spec"]["parallelism"] = "four"


def podgc(d: Doc) -> None:
    d["spec"]["podGC"]["strategy"] = "Never"


def two_types(d: Doc) -> None:
    _template(d, "plan")["script"] = {"image": "x", "source": "print(1)"}


def no_image(d: Doc) -> None:
    del _template(d, "plan")["container"]["image"]


def timeout_int(d: Doc) -> None:
    _template(d, "train")["timeout"] = "600"


def out_param(d: Doc) -> None:
    _template(d, "fetch")["outputs"]["parameters"][0]["valueFrom"] = {}


def meta_name(d: Doc) -> None:
    d["metadata"]["generateName"] = "Sweep_"


def cron6(d: Doc) -> None:
    d["spec"]["schedules"] = ["0 3 * * * *"]


def cron_garbage(d: Doc) -> None:
    d["spec"]["schedules"] = ["every day at 3am"]


def cron_range(d: Doc) -> None:
    d["spec"]["schedules"] = ["61 * * * *"]


def cron_singular(d: Doc) -> None:
    d["spec"]["schedule"] = "0 3 * * *"


def cron_tz(d: Doc) -> None:
    d["spec"]["timezone"] = "Mars/Olympus"


def cron_policy(d: Doc) -> None:
    d["spec"]["concurrencyPolicy"] = "Sometimes"


def cron_inner(d: Doc) -> None:
    _template(d, "train")["retryStrategy"]["retryPolicy"] = "Never"


def cron_name(d: Doc) -> None:
    d["metadata"]["name"] = "x" * 53


def ok_int(d: Doc) -> None:
    _template(d, "train")["retryStrategy"]["limit"] = 3


def ok_str(d: Doc) -> None:
    _template(d, "train")["retryStrategy"]["limit"] = "3"


def ok_var(d: Doc) -> None:
    _template(d, "train")["retryStrategy"]["limit"] = "{{workflow.parameters.sweep-id}}"


def ok_cron_descr(d: Doc) -> None:
    d["spec"]["schedules"] = ["@daily", "CRON_TZ=Europe/Paris 0 3 * * 1-5", "*/15 2,3 1-7 * MON"]


SWEEP_VARIANTS: list[tuple[Callable[[Doc], None], list[str]]] = [
    (
        unknown_top,
        [
            "spec.entrypiont: unknown field 'entrypiont' in WorkflowSpec (did you mean 'entrypoint'?)"
        ],
    ),
    (
        unknown_meta,
        ["metadata.lables: unknown field 'lables' in ObjectMeta (did you mean 'labels'?)"],
    ),
    (
        unknown_deep,
        [
            "spec.templates[train].retryStrategy.backoff.facter: unknown field 'facter' in Backoff (did you mean 'factor'?)"
        ],
    ),
    (
        unknown_task,
        [
            "spec.templates[main].dag.tasks[2].withParams: unknown field 'withParams' in DAGTask (did you mean 'withParam'?)"
        ],
    ),
    (
        unknown_affinity,
        [
            "spec.templates[train].retryStrategy.affinity.nodeAntiAffinity.hard: unknown field 'hard' in RetryNodeAntiAffinity"
        ],
    ),
    (
        limit_word,
        [
            "spec.templates[train].retryStrategy.limit: must be a non-negative integer or an Argo variable, got 'three'"
        ],
    ),
    (
        limit_negative,
        [
            "spec.templates[train].retryStrategy.limit: must be a non-negative integer or an Argo variable, got -1"
        ],
    ),
    (
        limit_float,
        ["spec.templates[train].retryStrategy.limit: expected string or integer, got number 2.5"],
    ),
    (
        factor_word,
        [
            "spec.templates[train].retryStrategy.backoff.factor: must be an integer or an Argo variable, got 'double'"
        ],
    ),
    (
        duration_bad,
        [
            'spec.templates[train].retryStrategy.backoff.duration: \'fifteen seconds\' is not a duration: seconds ("30") or a Go duration ("1m30s")'
        ],
    ),
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
    (parallelism_word, ['spec.parallelism: expected integer, got string "four"']),
    (
        podgc,
        [
            "spec.podGC.strategy: 'Never' is not one of OnPodCompletion, OnPodSuccess, OnWorkflowCompletion, OnWorkflowSuccess"
        ],
    ),
    (
        two_types,
        ["spec.templates[plan]: template 'plan' has several types (container, script): choose one"],
    ),
    (no_image, ["spec.templates[plan].container.image: required field is missing in Container"]),
    (timeout_int, ["spec.templates[train].timeout: '600' needs a unit, e.g. 600s"]),
    (
        out_param,
        [
            "spec.templates[fetch].outputs.parameters[0].valueFrom: give exactly one of path, jqFilter, jsonPath, parameter, expression, supplied (found none)"
        ],
    ),
    (
        meta_name,
        [
            "metadata.generateName: invalid generateName 'Sweep_': lowercase alphanumeric characters, '-' or '.'"
        ],
    ),
]


CRON_VARIANTS: list[tuple[Callable[[Doc], None], list[str]]] = [
    (
        cron6,
        [
            "spec.schedules[0]: '0 3 * * * *' has 6 fields; a schedule needs exactly 5 (minute hour day-of-month month day-of-week)"
        ],
    ),
    (
        cron_garbage,
        [
            "spec.schedules[0]: 'every day at 3am' has 4 fields; a schedule needs exactly 5 (minute hour day-of-month month day-of-week)"
        ],
    ),
    (cron_range, ["spec.schedules[0]: '61 * * * *' is not a valid cron expression"]),
    (
        cron_singular,
        [
            "spec.schedule: unknown field 'schedule' in CronWorkflowSpec: Argo v4 removed 'schedule': use 'schedules', a list of 5-field cron expressions"
        ],
    ),
    (cron_tz, ["spec.timezone: unknown time zone 'Mars/Olympus'"]),
    (cron_policy, ["spec.concurrencyPolicy: 'Sometimes' is not one of Allow, Forbid, Replace"]),
    (
        cron_inner,
        [
            "spec.workflowSpec.templates[train].retryStrategy.retryPolicy: 'Never' is not a valid retry policy: one of Always, OnFailure, OnError, OnTransientError"
        ],
    ),
    (cron_name, ["metadata.name: CronWorkflow name must be at most 52 characters"]),
]


def _problems(base: str, mutate: Callable[[Doc], None]) -> list[str]:
    """The problems of a broken copy of a golden manifest, with stable paths.

    ``templates[3]`` reads ``templates[compare]`` (the golden file may reorder its templates), and
    ``container.args[7]`` reads ``container.args[*]`` once this checks that args[7] really holds
    the ``{{...}}`` the message quotes (the golden file may gain arguments), and the list of
    every template reads ``(templates: <all>)``.
    """
    doc = copy.deepcopy(compiled(base))
    assert validate_document(doc) == []
    mutate(doc)
    return [_stable(doc, str(p)) for p in validate_document(doc)]


def _stable(doc: Doc, line: str) -> str:
    spec = doc["spec"].get("workflowSpec", doc["spec"])
    match = re.match(r"^[\w.]*templates\[(\d+)\]\.container\.args\[(\d+)\]: (\{\{.*?\}\})", line)
    if match:
        arg = spec["templates"][int(match[1])]["container"]["args"][int(match[2])]
        assert match[3] in arg, f"{line!r} names args[{match[2]}] = {arg!r}"
        line = re.sub(r"container\.args\[\d+\]", "container.args[*]", line, count=1)
    listed = ", ".join(t["name"] for t in spec.get("templates", []))
    line = line.replace(f"(templates: {listed})", "(templates: <all>)")
    return re.sub(
        r"templates\[(\d+)\]", lambda m: f"templates[{spec['templates'][int(m[1])]['name']}]", line
    )


@pytest.mark.parametrize(
    ("mutate", "expected"), SWEEP_VARIANTS, ids=lambda v: getattr(v, "__name__", "")
)
def test_broken_sweep(mutate: Callable[[Doc], None], expected: list[str]) -> None:
    assert _problems("sweep.yaml", mutate) == expected


@pytest.mark.parametrize(
    ("mutate", "expected"), CRON_VARIANTS, ids=lambda v: getattr(v, "__name__", "")
)
def test_broken_cron(mutate: Callable[[Doc], None], expected: list[str]) -> None:
    assert _problems("sweep-cron.yaml", mutate) == expected


@pytest.mark.parametrize("mutate", [ok_int, ok_str, ok_var], ids=lambda v: v.__name__)
def test_int_or_string_accepts_an_integer_a_numeric_string_and_a_variable(
    mutate: Callable[[Doc], None],
) -> None:
    assert _problems("sweep.yaml", mutate) == []


def test_cron_descriptors_time_zone_prefix_and_ranges_are_accepted() -> None:
    assert _problems("sweep-cron.yaml", ok_cron_descr) == []


def test_five_garbage_fields_are_not_a_schedule() -> None:
    def garbage(d: Doc) -> None:
        d["spec"]["schedules"] = ["a b c d e"]

    assert _problems("sweep-cron.yaml", garbage) == [
        "spec.schedules[0]: 'a b c d e' is not a valid cron expression"
    ]


def test_a_workflow_template_takes_parameters_from_its_caller_and_needs_no_entrypoint() -> None:
    doc = compiled()
    doc["kind"] = "WorkflowTemplate"
    doc["metadata"] = {"name": "sweep"}
    del doc["spec"]["entrypoint"]
    _args(doc, "plan")[1] = "{{workflow.parameters.from-the-caller}}"
    assert validate_document(doc) == []
    doc["kind"] = "Workflow"
    doc["spec"]["entrypoint"] = "main"
    assert [_stable(doc, str(p)) for p in validate_document(doc)] == [
        "spec.templates[plan].container.args[*]: {{workflow.parameters.from-the-caller}}: workflow "
        "parameter 'from-the-caller' is not declared in spec.arguments.parameters "
        "(declared: sweep-id)"
    ]


STEPS: Doc = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Workflow",
    "metadata": {"generateName": "steps-"},
    "spec": {
        "entrypoint": "main",
        "templates": [
            {
                "name": "main",
                "steps": [
                    [{"name": "gen", "template": "gen"}],
                    [
                        {
                            "name": "use",
                            "template": "echo",
                            "arguments": {
                                "parameters": [
                                    {"name": "msg", "value": "{{steps.gen.outputs.result}}"}
                                ]
                            },
                            "withItems": [1, 2],
                        }
                    ],
                ],
            },
            {"name": "gen", "script": {"image": "python:3.12", "source": "print(1)"}},
            {
                "name": "echo",
                "inputs": {"parameters": [{"name": "msg"}]},
                "container": {"image": "alpine", "args": ["{{inputs.parameters.msg}}"]},
            },
        ],
    },
}


def test_steps_references_resolve_in_order() -> None:
    doc: Any = copy.deepcopy(STEPS)
    assert validate_document(doc) == []
    use = doc["spec"]["templates"][0]["steps"][1][0]
    use["arguments"]["parameters"].append({"name": "n", "value": "{{item}}-{{steps.use.id}}"})
    use["arguments"]["parameters"][0]["value"] = "{{steps.gen.outputs.parameters.x}}"
    use["when"] = "{{steps.later.status}} == Succeeded"
    assert [str(p) for p in validate_document(doc)] == [
        "spec.templates[0].steps[1][0].arguments.parameters[0].value: "
        "{{steps.gen.outputs.parameters.x}}: step 'gen' (template 'gen') declares no output "
        "parameter 'x' (declared: none)",
        "spec.templates[0].steps[1][0].arguments.parameters[1].value: cannot resolve "
        "{{steps.use.id}}",
        "spec.templates[0].steps[1][0].when: {{steps.later.status}}: no step named 'later' in "
        "steps template 'main' (steps: gen, use)",
    ]


def test_every_volume_mount_names_a_declared_volume() -> None:
    def typo(d: Doc) -> None:
        _template(d, "train")["container"]["volumeMounts"][0]["name"] = "shard"

    assert _problems("sweep.yaml", typo) == [
        "spec.templates[train].container.volumeMounts[0].name: no volume named 'shard' in "
        "spec.volumes, spec.volumeClaimTemplates or the template's volumes "
        "(declared: dshm, shared)"
    ]

    def patched(d: Doc) -> None:  # a podSpecPatch may bring the volume: not checked then
        typo(d)
        _template(d, "train")["podSpecPatch"] = '{"volumes": [{"name": "shard", "emptyDir": {}}]}'

    assert _problems("sweep.yaml", patched) == []


def test_the_entrypoint_inputs_come_from_the_workflow_arguments() -> None:
    def needs_input(d: Doc) -> None:
        _template(d, "main")["inputs"] = {"parameters": [{"name": "budget"}]}

    assert _problems("sweep.yaml", needs_input) == [
        "spec.arguments.parameters: the entrypoint 'main' needs input parameter 'budget': "
        "declare it here"
    ]


def test_input_artifacts_must_be_declared() -> None:
    def artifact(d: Doc) -> None:
        _args(d, "train").append("{{inputs.artifacts.data.path}}")

    assert _problems("sweep.yaml", artifact) == [
        "spec.templates[train].container.args[*]: {{inputs.artifacts.data.path}}: template 'train' "
        "declares no input artifact 'data' (declared: none)"
    ]


def test_hooks_need_an_expression_and_an_existing_template() -> None:
    def hooks(d: Doc) -> None:
        d["spec"]["hooks"] = {
            "running": {"template": "notify"},
            "exit": {"template": "notifi"},
        }

    assert _problems("sweep.yaml", hooks) == [
        "spec.hooks.running.expression: hook 'running' needs an expression",
        "spec.hooks.exit.template: no template named 'notifi' (templates: <all>)",
    ]


def test_template_refs_to_other_workflow_templates_are_accepted_as_external() -> None:
    def external(d: Doc) -> None:
        fetch = _task(d, "fetch")
        del fetch["template"]
        fetch["templateRef"] = {"name": "shared-steps", "template": "fetch-v2"}

    # fetch's outputs now come from another WorkflowTemplate: train's references to them stand
    assert _problems("sweep.yaml", external) == []


def test_a_workflow_from_a_workflow_template_needs_no_entrypoint_but_no_templates_either() -> None:
    doc = compiled()
    doc["spec"] = {"workflowTemplateRef": {"name": "sweep"}, "arguments": doc["spec"]["arguments"]}
    assert validate_document(doc) == []
    doc["spec"]["templates"] = compiled()["spec"]["templates"][:1]
    assert [_stable(doc, str(p)) for p in validate_document(doc)] == [
        "spec.templates: must be empty when workflowTemplateRef is set (the templates come from it)"
    ]


def test_resource_limits_are_kubernetes_quantities() -> None:
    def gpu_word(d: Doc) -> None:
        _template(d, "train")["container"]["resources"]["limits"]["nvidia.com/gpu"] = "one"

    assert _problems("sweep.yaml", gpu_word) == [
        'spec.templates[train].container.resources.limits["nvidia.com/gpu"]: "one" is not a '
        "Kubernetes quantity (e.g. 500m, 4, 16Gi)"
    ]

    def gpu_int(d: Doc) -> None:
        _template(d, "train")["container"]["resources"]["limits"]["nvidia.com/gpu"] = 1
        _template(d, "train")["container"]["resources"]["requests"]["memory"] = (
            "{{inputs.parameters.params}}"
        )

    assert _problems("sweep.yaml", gpu_int) == []


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            '{"terminationGracePeriod": 15}',
            "unknown field 'terminationGracePeriod' in podSpecPatch "
            "(did you mean 'terminationGracePeriodSeconds'?)",
        ),
        (
            '{"terminationGracePeriodSeconds": "soon"}',
            'podSpecPatch terminationGracePeriodSeconds must be a non-negative integer, got "soon"',
        ),
        ('{"terminationGracePeriodSeconds": 15', "podSpecPatch is not valid YAML or JSON: "),
        ("[15]", "podSpecPatch must be an object (a partial PodSpec)"),
    ],
)
def test_pod_spec_patch_is_a_partial_pod_spec(patch: str, message: str) -> None:
    def set_patch(d: Doc) -> None:
        _template(d, "train")["podSpecPatch"] = patch

    (found,) = _problems("sweep.yaml", set_patch)
    assert found.startswith(f"spec.templates[train].podSpecPatch: {message}")


def test_pod_spec_patch_with_variables_is_parsed_around_them() -> None:
    def variable(d: Doc) -> None:
        _template(d, "train")["podSpecPatch"] = (
            '{"containers": [{"name": "main", "resources": {"limits": '
            '{{inputs.parameters.params}} }}], "terminationGracePeriodSeconds": 10}'
        )

    assert _problems("sweep.yaml", variable) == []


def test_an_empty_image_is_rejected() -> None:
    def empty(d: Doc) -> None:
        _template(d, "plan")["container"]["image"] = ""

    assert _problems("sweep.yaml", empty) == [
        "spec.templates[plan].container.image: must not be empty"
    ]


def test_workflow_level_fields_see_only_workflow_variables() -> None:
    def claim(d: Doc) -> None:
        d["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = (
            "{{workflow.parameters.claim}}"
        )
        d["spec"]["podMetadata"]["labels"]["trial"] = "{{inputs.parameters.trial-id}}"

    assert _problems("sweep.yaml", claim) == [
        "spec.podMetadata.labels.trial: {{inputs.parameters.trial-id}}: only valid inside a "
        "template, not in a workflow-level field",
        "spec.volumes[0].persistentVolumeClaim.claimName: {{workflow.parameters.claim}}: workflow "
        "parameter 'claim' is not declared in spec.arguments.parameters (declared: sweep-id)",
    ]

    def declared(d: Doc) -> None:
        d["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = (
            "{{workflow.parameters.sweep-id}}"
        )

    assert _problems("sweep.yaml", declared) == []


def test_workflow_parameter_values_must_be_in_their_enum() -> None:
    def enum(d: Doc) -> None:
        d["spec"]["arguments"]["parameters"][0]["enum"] = ["", "nightly"]
        d["spec"]["arguments"]["parameters"][0]["value"] = "weekly"

    assert _problems("sweep.yaml", enum) == [
        "spec.arguments.parameters[0].value: 'weekly' is not in enum ['', 'nightly']"
    ]

    def boolean(d: Doc) -> None:
        d["spec"]["arguments"]["parameters"][0]["enum"] = ["true", "false"]
        d["spec"]["arguments"]["parameters"][0]["value"] = True

    assert _problems("sweep.yaml", boolean) == []


def test_with_param_reads_only_tasks_it_depends_on() -> None:
    def loop_early(d: Doc) -> None:
        _task(d, "train")["depends"] = "fetch"
        _task(d, "fetch")["depends"] = ""

    assert _problems("sweep.yaml", loop_early) == [
        "spec.templates[main].dag.tasks[2].withParam: {{tasks.plan.outputs.parameters.trials}} "
        "reads an output of task 'plan', but task 'train' does not depend on 'plan': add it to "
        "depends"
    ]
