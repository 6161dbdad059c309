"""What the orchestrator keeps from a validated template (msgspec structs) and how it is extracted.

Identity follows reference/tosca-parser-offline.md section 8, requested
resources section 9. Extraction runs in the worker, on the parsed template.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec


class DeclaredInput(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    type: str
    required: bool  # the client must send it: TOSCA `required` (default true) and no default
    default: Any = None
    description: str | None = None
    constraints: tuple[Any, ...] = ()


class NodeSummary(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    type: str
    # The first normative (tosca.nodes.*, non-indigo) ancestor, e.g. tosca.nodes.Compute.
    base_type: str | None = None


class OsRequest(msgspec.Struct, frozen=True, kw_only=True):
    distribution: str | None = None
    version: str | None = None
    image: str | None = None  # an explicit image overrides distribution and version
    type: str | None = None
    architecture: str | None = None


class ComputeRequest(msgspec.Struct, frozen=True, kw_only=True):
    node: str
    type: str
    instances: int  # 0 is common (optional GPU workers) and adds nothing
    vcpus: int | None = None  # per instance
    ram_mb: float | None = None  # per instance, decimal MB (TOSCA: 1 GB = 1000 MB)
    disk_gb: float | None = None  # local disk per instance, decimal GB
    gpus: int | None = None
    gpu_vendor: str | None = None
    gpu_model: str | None = None
    instance_type: str | None = None  # a flavour name: the provider's flavour decides sizes
    preemptible: bool | None = None
    sgx: bool | None = None
    os: OsRequest | None = None
    is_container: bool = False  # Mesos/Marathon Docker runtime rather than a VM


class VolumeRequest(msgspec.Struct, frozen=True, kw_only=True):
    node: str
    size_gb: float | None
    count: int  # attached to this many VM instances


class RequestedResources(msgspec.Struct, frozen=True, kw_only=True):
    vms: int = 0
    containers: int = 0
    vcpus: int = 0
    ram_mb: float = 0.0
    gpus: int = 0
    disk_gb: float = 0.0  # local disks
    volumes: int = 0
    volumes_gb: float = 0.0
    public_ips: int = 0
    os: tuple[OsRequest, ...] = ()  # distinct OS requests of VMs with instances > 0
    computes: tuple[ComputeRequest, ...] = ()
    block_storage: tuple[VolumeRequest, ...] = ()
    # False when some size or count was not a literal or an input (e.g. concat):
    # the totals then count what is known and assume 1 instance.
    exact: bool = True


class TemplateFacts(msgspec.Struct, frozen=True, kw_only=True):
    template_name: str
    template_type: str
    identity_source: str  # "metadata" | "registry" | "display_name" | "content_hash"
    template_hash: str  # "sha256:<hex>" of the UTF-8 template text
    template_version: str | None = None
    tosca_definitions_version: str
    description: str | None = None
    metadata: dict[str, Any] = {}
    imports: tuple[str, ...] = ()
    inputs: tuple[DeclaredInput, ...] = ()
    outputs: tuple[str, ...] = ()
    node_templates: tuple[NodeSummary, ...] = ()
    node_types: tuple[str, ...] = ()  # sorted; a classifier that metadata edits cannot forge
    resources: RequestedResources = RequestedResources()
    normalized_inputs: dict[str, Any] = {}


def content_hash(template_text: str) -> str:
    return "sha256:" + hashlib.sha256(template_text.encode("utf-8")).hexdigest()


# ---- identity ------------------------------------------------------------------------------


def _text(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def network_variant(template_text: str) -> str:
    """The dashboard tells `private-net` variants apart by public network mentions."""
    if "pub_network" in template_text or "public_address" in template_text:
        return "public"
    if "priv_network" in template_text:
        return "private"
    return "public"


def identity(
    metadata: Mapping[str, Any],
    template_text: str,
    template_hash: str,
    known_templates: Mapping[str, str],
    node_type_chains: list[list[str]],
) -> tuple[str, str, str, str | None]:
    """(template_name, identity_source, template_type, template_version)."""
    version = _text(metadata.get("template_version"))
    name = _text(metadata.get("template_name"))
    if name:
        source = "metadata"
    elif template_hash in known_templates:
        name, source = known_templates[template_hash], "registry"
    elif _text(metadata.get("display_name")):
        name = _text(metadata.get("display_name"))
        if network_variant(template_text) == "private":
            name = f"{name} (private network)"
        source = "display_name"
    else:
        name, source = template_hash, "content_hash"
    kind = _text(metadata.get("template_type")) or derived_type(node_type_chains)
    return name or template_hash, source, kind.lower(), version


def derived_type(node_type_chains: list[list[str]]) -> str:
    """A coarse deployment kind from node types (the legacy dashboard's classes + kubernetes)."""
    every = {t for chain in node_type_chains for t in chain}
    if "tosca.nodes.indigo.Qcg.Job" in every:
        return "qcg"
    if "tosca.nodes.indigo.Container.Application.Docker.Marathon" in every:
        return "marathon"
    if "tosca.nodes.indigo.Container.Application.Docker.Chronos" in every:
        return "chronos"
    if any("kubernetes" in t.lower() for t in every):
        return "kubernetes"
    return "cloud"


# ---- resources -----------------------------------------------------------------------------


class _Unresolved:
    pass


UNRESOLVED = _Unresolved()


def _resolve(value: object) -> object:
    """A property value with `get_input` resolved; other functions are UNRESOLVED."""
    from toscaparser import functions

    if isinstance(value, functions.GetInput):
        # Our normalised value as the client sent it (the parser's result() would
        # rewrite versions, "7" -> "7.0"); the default when it was not sent.
        params = getattr(value.tosca_tpl, "parsed_params", None) or {}
        try:
            if value.input_name in params:
                return _resolve(params[value.input_name])
            return _resolve(value.result())
        except Exception:
            return UNRESOLVED
    if isinstance(value, functions.Function):
        return UNRESOLVED
    if (
        isinstance(value, dict)
        and len(value) == 1
        and next(iter(value)) in functions.function_mappings
    ):
        return UNRESOLVED
    return value


def _as_written(raw: object, parsed: object, params: Mapping[str, Any]) -> object:
    """A `get_input` as the client sent it (normalised by us), else the parser's value.

    The parser resolves capability properties itself and rewrites some values on
    the way (a version "7" becomes "7.0")."""
    if isinstance(raw, Mapping) and len(raw) == 1 and "get_input" in raw:
        name = raw["get_input"]
        if isinstance(name, str) and name in params:
            return params[name]
    return _resolve(parsed)


def _cap_property(node: Any, capability: str, prop: str, params: Mapping[str, Any]) -> object:
    try:
        cap = node.get_capability(capability)
    except Exception:
        return None
    if cap is None:
        return None
    try:
        props = cap.get_properties()
    except Exception:
        return None
    if not props or prop not in props:
        return None
    raw = (
        ((node.entity_tpl.get("capabilities") or {}).get(capability) or {}).get("properties") or {}
    ).get(prop)
    return _as_written(raw, props[prop].value, params)


def _node_property(node: Any, prop: str, params: Mapping[str, Any]) -> object:
    try:
        props = node.get_properties()
    except Exception:
        return None
    if not props or prop not in props:
        return None
    raw = (node.entity_tpl.get("properties") or {}).get(prop)
    return _as_written(raw, props[prop].value, params)


class _Accumulator:
    def __init__(self) -> None:
        self.exact = True

    def integer(self, value: object) -> int | None:
        if value is None:
            return None
        if value is UNRESOLVED:
            self.exact = False
            return None
        if isinstance(value, bool):
            return None
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.exact = False
            return None
        if not math.isfinite(number):
            self.exact = False
            return None
        # Containers ask for fractions of a CPU; count whole CPUs.
        return math.ceil(number)

    def size(self, value: object, unit: str) -> float | None:
        if value is None:
            return None
        if value is UNRESOLVED:
            self.exact = False
            return None
        from .inputs import InputError, scalar_magnitude

        try:
            return scalar_magnitude("scalar-unit.size", str(value)) / {"MB": 1e6, "GB": 1e9}[unit]
        except InputError:
            self.exact = False
            return None

    def text(self, value: object) -> str | None:
        if value is None:
            return None
        if value is UNRESOLVED:
            self.exact = False
            return None
        if isinstance(value, float):
            # YAML reads 20.04 as a float
            return repr(value)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
        return None

    def flag(self, value: object) -> bool | None:
        if isinstance(value, bool):
            return value
        if value is UNRESOLVED:
            self.exact = False
        return None


def _requirement_targets(node: Any) -> Iterator[tuple[str, object]]:
    """(requirement name, target node name) of a node's requirements, short or long form."""
    for requirement in node.requirements or []:
        if isinstance(requirement, Mapping):
            for req_name, target in requirement.items():
                yield req_name, target.get("node") if isinstance(target, Mapping) else target


def _derived(node: Any, type_name: str) -> bool:
    try:
        return bool(node.is_derived_from(type_name))
    except Exception:
        return False


def requested_resources(tosca: Any, params: Mapping[str, Any] | None = None) -> RequestedResources:
    """What the template asks for, with `params` the normalised input values."""
    acc = _Accumulator()
    computes: list[ComputeRequest] = []
    instances_of: dict[str, int] = {}
    nodes = list(getattr(tosca, "nodetemplates", None) or [])
    values: Mapping[str, Any] = params if params is not None else (tosca.parsed_params or {})

    def cap(node: Any, capability: str, prop: str) -> object:
        return _cap_property(node, capability, prop, values)

    def prop_of(node: Any, prop: str) -> object:
        return _node_property(node, prop, values)

    for node in nodes:
        is_vm = _derived(node, "tosca.nodes.Compute")
        is_container = _derived(node, "tosca.nodes.indigo.Container.Runtime.Docker")
        if not (is_vm or is_container):
            continue
        count = cap(node, "scalable", "count")
        if count is None:
            count = cap(node, "scalable", "default_instances")
        instances = acc.integer(count)
        if instances is None:
            instances = 1
        instances = max(instances, 0)
        instances_of[node.name] = instances
        os_request = None
        if is_vm:
            os_request = OsRequest(
                distribution=acc.text(cap(node, "os", "distribution")),
                version=acc.text(cap(node, "os", "version")),
                image=acc.text(cap(node, "os", "image")),
                type=acc.text(cap(node, "os", "type")),
                architecture=acc.text(cap(node, "os", "architecture")),
            )
        computes.append(
            ComputeRequest(
                node=node.name,
                type=node.type,
                instances=instances,
                vcpus=acc.integer(cap(node, "host", "num_cpus")),
                ram_mb=acc.size(cap(node, "host", "mem_size"), "MB"),
                disk_gb=acc.size(cap(node, "host", "disk_size"), "GB"),
                gpus=acc.integer(cap(node, "host", "num_gpus")),
                gpu_vendor=acc.text(cap(node, "host", "gpu_vendor")),
                gpu_model=acc.text(cap(node, "host", "gpu_model")),
                instance_type=acc.text(cap(node, "host", "instance_type")),
                preemptible=acc.flag(cap(node, "host", "preemtible_instance")),
                sgx=acc.flag(cap(node, "host", "sgx")),
                os=os_request,
                is_container=is_container and not is_vm,
            )
        )

    volumes: list[VolumeRequest] = []
    attached: dict[str, int] = {}
    for node in nodes:
        if node.name not in instances_of:
            continue
        for req_name, target_name in _requirement_targets(node):
            if req_name == "local_storage" and isinstance(target_name, str):
                attached[target_name] = attached.get(target_name, 0) + instances_of[node.name]
    for node in nodes:
        if not _derived(node, "tosca.nodes.BlockStorage"):
            continue
        count = attached.get(node.name, 1)
        volumes.append(
            VolumeRequest(
                node=node.name, size_gb=acc.size(prop_of(node, "size"), "GB"), count=count
            )
        )

    public_ips = 0
    public_networks = {
        n.name
        for n in nodes
        if _derived(n, "tosca.nodes.network.Network") and prop_of(n, "network_type") == "public"
    }
    ports_binding: set[str] = set()
    for node in nodes:
        if not _derived(node, "tosca.nodes.network.Port"):
            continue
        binding = link = None
        for req_name, target_name in _requirement_targets(node):
            if req_name == "binding":
                binding = target_name
            elif req_name == "link":
                link = target_name
        if link in public_networks and isinstance(binding, str):
            ports_binding.add(binding)
            public_ips += instances_of.get(binding, 1)
    for node in nodes:
        if node.name in instances_of and node.name not in ports_binding:
            if cap(node, "endpoint", "network_name") == "PUBLIC":
                public_ips += instances_of[node.name]

    vm_requests = [c for c in computes if not c.is_container]
    os_seen: list[OsRequest] = []
    for c in vm_requests:
        if c.instances > 0 and c.os is not None and c.os not in os_seen:
            os_seen.append(c.os)
    return RequestedResources(
        vms=sum(c.instances for c in vm_requests),
        containers=sum(c.instances for c in computes if c.is_container),
        vcpus=sum(c.instances * (c.vcpus or 0) for c in computes),
        ram_mb=float(sum(c.instances * (c.ram_mb or 0.0) for c in computes)),
        gpus=sum(c.instances * (c.gpus or 0) for c in computes),
        disk_gb=float(sum(c.instances * (c.disk_gb or 0.0) for c in computes)),
        volumes=sum(v.count for v in volumes),
        volumes_gb=float(sum(v.count * (v.size_gb or 0.0) for v in volumes)),
        public_ips=public_ips,
        os=tuple(os_seen),
        computes=tuple(computes),
        block_storage=tuple(volumes),
        exact=acc.exact,
    )


def type_chain(node: Any) -> list[str]:
    chain: list[str] = []
    current = getattr(node, "type_definition", None)
    while current is not None and len(chain) < 64:
        name = getattr(current, "type", None)
        if isinstance(name, str):
            chain.append(name)
        current = getattr(current, "parent_type", None)
    return chain


def base_type(chain: list[str]) -> str | None:
    """The first normative TOSCA node type in a type chain (tosca.nodes.Compute, ...)."""
    from toscaparser.elements.entity_type import EntityType

    for name in chain:
        if name in EntityType.TOSCA_DEF:
            return name
    return chain[-1] if chain else None
