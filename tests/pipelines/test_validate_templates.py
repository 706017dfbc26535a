"""Templates calling and referring to each other: WorkflowTemplates, steps, volumes, hooks, the
variables a field may use. Each case starts from the golden sweep (or a small workflow)."""

from __future__ import annotations

import copy
from typing import Any

from pipelines.validate import validate_document
from tests.support.validate import compiled
from tests.support.validate_broken import Doc, _args, _problems, _stable, _task, _template


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
        "(declared: dshm, shared, tmp)"
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
