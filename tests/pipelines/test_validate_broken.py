"""Broken variants of the compiled sweep: the schema's fields and values.

Every variant starts from the golden ``pipelines/compiled/sweep.yaml`` (or ``sweep-cron.yaml``),
breaks one thing, and must get exactly the listed problems, no more, no fewer.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.validate_broken import Doc, _problems, _task, _template


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


def ok_int(d: Doc) -> None:
    _template(d, "train")["retryStrategy"]["limit"] = 3


def ok_str(d: Doc) -> None:
    _template(d, "train")["retryStrategy"]["limit"] = "3"


def ok_var(d: Doc) -> None:
    _template(d, "train")["retryStrategy"]["limit"] = "{{workflow.parameters.sweep-id}}"


SCHEMA_VARIANTS: list[tuple[Callable[[Doc], None], list[str]]] = [
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


@pytest.mark.parametrize(
    ("mutate", "expected"), SCHEMA_VARIANTS, ids=lambda v: getattr(v, "__name__", "")
)
def test_broken_sweep_fields(mutate: Callable[[Doc], None], expected: list[str]) -> None:
    assert _problems("sweep.yaml", mutate) == expected


@pytest.mark.parametrize("mutate", [ok_int, ok_str, ok_var], ids=lambda v: v.__name__)
def test_int_or_string_accepts_an_integer_a_numeric_string_and_a_variable(
    mutate: Callable[[Doc], None],
) -> None:
    assert _problems("sweep.yaml", mutate) == []


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
