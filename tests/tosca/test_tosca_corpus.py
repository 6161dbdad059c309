"""Every template of the shared corpus, validated offline.

Expected results are those of reference/tosca-parser-offline.md section 5 and
the corpus README: indigo-dc/tosca-types examples 41 of 66 pass,
indigo-dc/tosca-templates 22 of 40, indigo-paas/tosca-templates 5 of 9 (3
cannot be resolved offline, 1 fails against the INFN 3.4.0 types). Required
inputs without a default are supplied (a real client must send them; the
reference ran the parser without them, which only logs a warning).
"""

from __future__ import annotations

import pytest
from tosca_helpers import CORPUS, required_inputs

from tosca import ImportRejected, TemplateError

GROUPS = {
    "indigo-dc/tosca-types/examples": 41,
    "indigo-dc/tosca-templates": 22,
    "indigo-paas/tosca-templates": 5,
}

HOST = ("ValidationError", 'Relationship "host"')
UNKNOWN_FIELD = "UnknownFieldError"
INVALID_TYPE = "InvalidTypeError"

# relative path -> (problem type of the first problem, text in it). Everything else passes.
EXPECTED_FAILURES: dict[str, tuple[str, str]] = {
    # tosca-parser 2.x enforces the inherited [1,1] `host` requirement; Alien4Cloud did not.
    **{
        f"indigo-dc/tosca-types/examples/{name}": HOST
        for name in (
            "disvis_elastic_cluster.yaml",
            "docker_galaxy.yaml",
            "elastic_cluster.yaml",
            "elastic_cluster_im.yaml",
            "eubiosteo_server.yaml",
            "galaxy_cluster.yaml",
            "galaxy_cluster_elixir_it.yaml",
            "galaxy_docker_elixir_it.yaml",
            "galaxy_elastic_cluster.yaml",
            "galaxy_elastic_cluster_aws.yaml",
            "galaxy_elastic_cluster_elixir_it.yaml",
            "galaxy_elixir_it.yaml",
            "galaxy_fastconfig_elixir_it.yaml",
            "hybrid_elastic_cluster.yaml",
            "hybrid_elastic_cluster_vr.yaml",
            "hybrid_elastic_cluster_vr_l2.yaml",
            "hybrid_elastic_cluster_vr_l2_add.yaml",
            "hybrid_kubernetes_elastic_cluster.yaml",
            "hybrid_kubernetes_elastic_cluster_vr.yaml",
            "hybrid_mesos_elastic_cluster.yaml",
            "kubernetes_elastic_cluster.yaml",
            "mesos_elastic_cluster.yaml",
            "tesk_k8s_cluster.yml",
        )
    },
    "indigo-dc/tosca-templates/galaxy_elastic_cluster_elixir_it.yaml": HOST,
    "indigo-dc/tosca-templates/galaxy_elixir_it.yaml": HOST,
    # Type-version drift: the templates import other branches than the snapshot.
    "indigo-dc/tosca-types/examples/node_with_availability_zone.yaml": (
        UNKNOWN_FIELD,
        "availability_zone",
    ),
    "indigo-dc/tosca-types/examples/vm_docker_deepass.yml": (UNKNOWN_FIELD, "rclone_pass"),
    **{
        f"indigo-dc/tosca-templates/dodas/{name}": (UNKNOWN_FIELD, "cms_xrd_readserver")
        for name in (
            "CMS-HTCondor-AWS.yaml",
            "CMS-HTCondor-Google.yaml",
            "CMS-HTCondor-TSystem.yaml",
            "CMS-HTCondor-and-onedata.yaml",
            "CMS-HTCondor-dodas.yaml",
        )
    },
    "indigo-dc/tosca-templates/lifewatch-algaebloom.yaml": (UNKNOWN_FIELD, "scalable"),
    "indigo-dc/tosca-templates/simple-node.yml": (UNKNOWN_FIELD, "zabbix_server"),
    "indigo-dc/tosca-templates/dodas/AMS_cluster.yaml": (INVALID_TYPE, "AmsCondorMasterConfig"),
    "indigo-dc/tosca-templates/dodas/CMS-XCache-k8s.yaml": (INVALID_TYPE, "XCache"),
    "indigo-dc/tosca-templates/dodas/CMS-XCache-mesos.yaml": (INVALID_TYPE, "XCache"),
    "indigo-dc/tosca-templates/dodas/htcondor_cluster.yaml": (INVALID_TYPE, "HTCondorServices"),
    # tosca-parser is strict on int/float/bool vs the declared type.
    "indigo-dc/tosca-templates/deep-oc/deep-oc-dogs_breed.yml": ("ValueError", "is not a float"),
    "indigo-dc/tosca-templates/deep-oc/deep-oc-retinopathy-cpu-template.yml": (
        "ValueError",
        "is not a float",
    ),
    "indigo-dc/tosca-templates/deep-oc/deep-oc-retinopathy-gpu-template.yml": (
        "ValueError",
        "is not a float",
    ),
    "indigo-dc/tosca-templates/deep-oc/deep-oc-mods_mesos-gpu.yml": (
        "InvalidDefaultError",
        "True is not a string",
    ),
    "indigo-dc/tosca-templates/xdc/xdc-deep-common-usecase.yml": (
        "InvalidDefaultError",
        "True is not a string",
    ),
    # indigo-paas/tosca-types has no licence, so its application types are not in the corpus.
    "indigo-paas/tosca-templates/kubernetes/dodas.yaml": ("ImportRejected", "dodas_types.yaml"),
    "indigo-paas/tosca-templates/kubernetes/openeo.yaml": ("ImportRejected", "c-scale_openeo"),
    "indigo-paas/tosca-templates/single-vm/elasticsearch_kibana.yaml": (
        "ImportRejected",
        "elasticstack_types.yaml",
    ),
    # Built for the older indigo-paas types.
    "indigo-paas/tosca-templates/kubernetes/k8s_cluster.yaml": (
        INVALID_TYPE,
        "tosca.nodes.indigo.network.Port",
    ),
}


def _templates() -> list[str]:
    if not CORPUS.is_dir():
        return []
    found = []
    for group in GROUPS:
        for suffix in ("*.yaml", "*.yml"):
            found.extend(
                str(p.relative_to(CORPUS)) for p in (CORPUS / group).rglob(suffix) if p.is_file()
            )
    return sorted(found)


TEMPLATES = _templates()


@pytest.mark.parametrize("relative", TEMPLATES)
def test_corpus_template(relative: str, corpus, check) -> None:
    text = (corpus / relative).read_text(encoding="utf-8")
    expected = EXPECTED_FAILURES.get(relative)
    if expected is None:
        facts = check(text, required_inputs(text))
        assert facts.node_templates
        assert facts.template_hash.startswith("sha256:")
        return
    problem_type, fragment = expected
    error_class = ImportRejected if problem_type == "ImportRejected" else TemplateError
    with pytest.raises(error_class) as caught:
        check(text, required_inputs(text))
    first = caught.value.problems[0]
    assert first.type == problem_type
    assert fragment in first.message
    assert "Traceback" not in caught.value.message
    assert str(corpus) not in caught.value.message


def test_corpus_totals_match_the_reference(corpus) -> None:
    assert len(TEMPLATES) == 66 + 40 + 9
    for group, passing in GROUPS.items():
        in_group = [t for t in TEMPLATES if t.startswith(group + "/")]
        failing = [t for t in in_group if t in EXPECTED_FAILURES]
        assert len(in_group) - len(failing) == passing, group
    assert set(EXPECTED_FAILURES) <= set(TEMPLATES)
