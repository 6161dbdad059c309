"""Template identity (reference section 8) and requested resources (section 9)."""

from __future__ import annotations

import msgspec
from tosca_helpers import infn_vm_template, read_corpus, required_inputs

from tosca import OsRequest, TemplateFacts, content_hash

SINGLE_VM_WITH_VOLUME = "indigo-paas/tosca-templates/single-vm/single_vm_with_volume.yaml"
K8S_EXAMPLE = "indigo-dc/tosca-types/examples/kubernetes_cluster.yaml"


def test_single_vm_with_volume_defaults(check) -> None:
    text = read_corpus(SINGLE_VM_WITH_VOLUME)
    facts = check(text, {})
    assert facts.template_name == "Virtual machine with block device"
    assert facts.identity_source == "display_name"
    assert facts.template_type == "cloud"
    assert facts.template_hash == content_hash(text)
    assert facts.description.startswith("Launch a compute node with attached volume")
    assert facts.metadata == {"display_name": "Virtual machine with block device"}
    assert facts.outputs == ("node_ip", "node_creds")
    assert facts.node_types == (
        "tosca.nodes.indigo.BlockStorage",
        "tosca.nodes.indigo.Compute",
        "tosca.nodes.network.Network",
        "tosca.nodes.network.Port",
    )
    bases = {n.name: n.base_type for n in facts.node_templates}
    assert bases["server"] == "tosca.nodes.Compute"
    assert bases["block_device"] == "tosca.nodes.BlockStorage"
    r = facts.resources
    assert (r.vms, r.vcpus, r.ram_mb, r.gpus, r.disk_gb) == (1, 1, 2000.0, 0, 0.0)
    assert (r.volumes, r.volumes_gb, r.public_ips) == (1, 10.0, 1)
    assert r.os == (OsRequest(distribution="ubuntu", version="20.04"),)
    assert r.exact is True


def test_inputs_change_the_resources(check) -> None:
    facts = check(
        read_corpus(SINGLE_VM_WITH_VOLUME),
        {
            "num_cpus": 4,
            "mem_size": "4 GB",
            "volume_size": "50 GB",
            "os_distribution": "centos",
            "os_version": 7,
        },
    )
    r = facts.resources
    assert (r.vcpus, r.ram_mb, r.volumes_gb) == (4, 4000.0, 50.0)
    assert r.os == (OsRequest(distribution="centos", version="7"),)


def test_kubernetes_example_counts_scaled_workers(check) -> None:
    facts = check(read_corpus(K8S_EXAMPLE), {"wn_num": 3, "wn_cpus": 2, "wn_mem": "4 GB"})
    assert facts.template_type == "kubernetes"
    # No metadata at all: identity falls back to the content hash.
    assert facts.identity_source == "content_hash"
    assert facts.template_name == facts.template_hash
    r = facts.resources
    assert (r.vms, r.vcpus, r.ram_mb, r.public_ips) == (4, 2 + 3 * 2, 2000.0 + 3 * 4000.0, 1)
    assert r.os == (OsRequest(image="linux-ubuntu-16.04-vmi"),)
    workers = next(c for c in r.computes if c.node == "lrms_wn")
    assert (workers.instances, workers.vcpus, workers.ram_mb) == (3, 2, 4000.0)


def test_zero_instances_add_nothing(check) -> None:
    r = check(read_corpus(K8S_EXAMPLE), {"wn_num": 0}).resources
    assert (r.vms, r.vcpus, r.ram_mb) == (1, 2, 2000.0)


def test_marathon_containers_are_counted_apart_from_vms(check) -> None:
    text = read_corpus("indigo-dc/tosca-types/examples/indigo_marathon_app.yaml")
    facts = check(text, {"cpus": 0.5, "mem": "512 MB"})
    assert facts.template_type == "marathon"
    r = facts.resources
    assert (r.vms, r.containers, r.vcpus, r.ram_mb) == (0, 1, 1, 512.0)


def test_qcg_and_explicit_image(check) -> None:
    qcg = check(read_corpus("indigo-dc/tosca-types/examples/qcg-job.yaml"), {})
    assert (qcg.template_type, qcg.template_name, qcg.identity_source) == (
        "qcg",
        "HPC Job",
        "display_name",
    )
    image = check(read_corpus("indigo-dc/tosca-types/examples/node_with_image.yaml"), {})
    assert (
        image.resources.os[0].image == "https://onedock.i3m.upv.es:11443/uuid_ubuntu_ambertools_5"
    )


def test_identity_prefers_metadata_template_name(check) -> None:
    text = infn_vm_template(
        metadata="  template_name: single-vm\n  template_version: 1.2.0\n"
        "  template_type: vm\n  display_name: Virtual machine\n"
    )
    facts = check(text, {})
    assert (facts.template_name, facts.template_version, facts.template_type) == (
        "single-vm",
        "1.2.0",
        "vm",
    )
    assert facts.identity_source == "metadata"


def test_identity_uses_the_registry_before_display_name(check) -> None:
    text = infn_vm_template()
    facts = check(text, {}, known_templates={content_hash(text): "infn-single-vm"})
    assert (facts.template_name, facts.identity_source) == ("infn-single-vm", "registry")
    assert check(text, {}).template_name == "Test VM"


def test_private_network_variant_is_named_apart(check) -> None:
    public = infn_vm_template()
    private = (
        public.replace("network_type: public", "network_type: private")
        .replace("pub_network", "other_network")
        .replace("public_address", "private_address")
    )
    assert check(public, {}).template_name == "Test VM"
    facts = check(private, {})
    assert facts.template_name == "Test VM (private network)"
    assert facts.resources.public_ips == 0


def test_facts_round_trip_through_json(check) -> None:
    text = read_corpus("indigo-dc/tosca-templates/galaxy.yaml")
    facts = check(text, required_inputs(text))
    encoded = msgspec.json.encode(facts)
    assert msgspec.json.decode(encoded, type=TemplateFacts) == facts
