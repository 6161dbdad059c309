"""Offline import resolution: the URL map, the closure, and refusal of everything else."""

from __future__ import annotations

from pathlib import Path

import pytest
from tosca_helpers import INDIGO_CUSTOM, INFN_BASIC

from tosca import (
    FetchConfig,
    ImportRejected,
    ImportResolver,
    ImportRule,
    ResolverConfig,
    default_resolver_config,
)

INFN_K8S = (
    "https://baltig.infn.it/infn-cloud/tosca-types/raw/v3.4.0/"
    "tosca_types/infrastructure/kubernetes_types.yaml"
)


@pytest.mark.parametrize(
    ("url", "local"),
    [
        (INDIGO_CUSTOM, "indigo-dc/tosca-types/custom_types.yaml"),
        (
            "https://raw.githubusercontent.com/indigo-dc/tosca-types/devel/custom_types.yaml",
            "indigo-dc/tosca-types/custom_types.yaml",
        ),
        (INFN_BASIC, "ffornari90/tosca-types/tosca_types/base/basic_types.yaml"),
        (
            "https://baltig.infn.it/infn-cloud/tosca-types/-/raw/master/tosca_types/base/basic_types.yaml",
            "ffornari90/tosca-types/tosca_types/base/basic_types.yaml",
        ),
        (
            "https://github.com/indigo-paas/tosca-types/raw/main/tosca_types/infrastructure/docker_types.yaml",
            "ffornari90/tosca-types/tosca_types/infrastructure/docker_types.yaml",
        ),
        (
            "https://raw.githubusercontent.com/indigo-paas/tosca-types/main/tosca_types/base/basic_types.yaml",
            "ffornari90/tosca-types/tosca_types/base/basic_types.yaml",
        ),
    ],
)
def test_known_urls_map_to_the_type_files(resolver, corpus, url, local) -> None:
    assert resolver.map_url(url) == (corpus / local).resolve()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://example.org/types.yaml", "not one of the known"),
        ("http://127.0.0.1:9/custom_types.yaml", "not one of the known"),
        ("http://169.254.169.254/latest/meta-data/x.yaml", "not one of the known"),
        ("file:///etc/passwd", "no local files"),
        ("/etc/passwd", "no local files"),
        ("../../../etc/passwd", "no local files"),
        ("custom_types.yaml", "no local files"),
        (
            "https://raw.githubusercontent.com/indigo-dc/tosca-types/some-fork/custom_types.yaml",
            'version "some-fork"',
        ),
        (
            "https://raw.githubusercontent.com/indigo-dc/tosca-types/master/../../etc/passwd.yaml",
            "unexpected file path",
        ),
        (
            "https://raw.githubusercontent.com/indigo-dc/tosca-types/master/missing.yaml",
            "not available offline",
        ),
        (
            "https://raw.githubusercontent.com/indigo-dc/tosca-types/master/README.md",
            "not a YAML type file",
        ),
        (
            "https://raw.githubusercontent.com/indigo-dc/tosca-types/master/custom_types.yaml?x=1",
            "unexpected URL parts",
        ),
        (
            "https://user:pw@raw.githubusercontent.com/indigo-dc/tosca-types/master/custom_types.yaml",
            "unexpected URL parts",
        ),
    ],
)
def test_anything_else_is_refused_with_a_clear_error(resolver, corpus, url, reason) -> None:
    with pytest.raises(ImportRejected) as caught:
        resolver.map_url(url)
    assert reason in caught.value.message
    assert str(corpus) not in caught.value.message


def test_the_closure_follows_imports_inside_type_files(resolver, corpus) -> None:
    closure = resolver.resolve([{"k8s": INFN_K8S}])
    master = "https://baltig.infn.it/infn-cloud/tosca-types/raw/master/tosca_types/base/"
    assert set(closure.local_defs) == {
        INFN_K8S,
        master + "basic_types.yaml",
        master + "cluster_basic_types.yaml",
    }
    assert closure.local_defs[master + "basic_types.yaml"] == str(
        (corpus / "ffornari90/tosca-types/tosca_types/base/basic_types.yaml").resolve()
    )
    assert len(closure.files) == 3


@pytest.mark.parametrize(
    "imports",
    [
        [{"types": {"file": "custom_types.yaml", "repository": "mine"}}],
        "not-a-list",
        [42],
        [{"types": {"namespace_prefix": "x"}}],
    ],
)
def test_malformed_or_repository_imports_are_refused(resolver, imports) -> None:
    with pytest.raises(ImportRejected):
        resolver.resolve(imports)


def test_long_and_short_import_forms_are_accepted(resolver) -> None:
    closure = resolver.resolve([INDIGO_CUSTOM, {"named": {"file": INFN_BASIC}}])
    assert set(closure.local_defs) == {INDIGO_CUSTOM, INFN_BASIC}


def test_fetching_is_disabled_by_default_and_host_allow_listed_when_enabled(
    resolver_config, tmp_path: Path
) -> None:
    assert resolver_config.fetch.enabled is False
    enabled = ResolverConfig(
        types_dir=resolver_config.types_dir,
        rules=resolver_config.rules,
        fetch=FetchConfig(
            enabled=True, allowed_hosts=("types.example.org",), cache_dir=str(tmp_path)
        ),
    )
    resolver = ImportResolver(enabled)
    for url in ("https://other.example.org/types.yaml", "http://types.example.org/types.yaml"):
        with pytest.raises(ImportRejected, match="allow-list"):
            resolver.map_url(url)
    # Already cached: served from the cache directory, no network involved.
    url = "https://types.example.org/v1/types.yaml"
    import hashlib

    cached = tmp_path / (hashlib.sha256(url.encode()).hexdigest() + ".yaml")
    cached.write_text("tosca_definitions_version: tosca_simple_yaml_1_0\n")
    assert resolver.map_url(url) == cached


def test_types_dir_is_configurable(tmp_path: Path) -> None:
    library = tmp_path / "mine"
    library.mkdir()
    (library / "types.yaml").write_text("tosca_definitions_version: tosca_simple_yaml_1_0\n")
    resolver = ImportResolver(
        ResolverConfig(
            types_dir=str(tmp_path),
            rules=(
                ImportRule(
                    url_prefix="https://types.example.org/{ref}/", directory="mine", refs=("v1",)
                ),
            ),
        )
    )
    assert resolver.map_url("https://types.example.org/v1/types.yaml") == library / "types.yaml"
    with pytest.raises(ImportRejected):
        resolver.map_url("https://types.example.org/v2/types.yaml")


def test_default_config_points_at_the_shared_corpus_types(monkeypatch, tmp_path: Path) -> None:
    import tosca.imports

    monkeypatch.delenv("ORCH_TOSCA_TYPES_DIR", raising=False)
    # The shared corpus next to the repository, when it is there; else no types at all.
    monkeypatch.setattr(tosca.imports, "_SHARED_CORPUS", tmp_path)
    assert default_resolver_config().types_dir == str(tmp_path.resolve())
    monkeypatch.setattr(tosca.imports, "_SHARED_CORPUS", tmp_path / "absent")
    assert default_resolver_config().types_dir is None
    monkeypatch.setenv("ORCH_TOSCA_TYPES_DIR", "/srv/tosca-types")
    assert default_resolver_config().types_dir == "/srv/tosca-types"


def test_a_type_file_with_aliases_is_refused(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "bad.yaml").write_text(
        "tosca_definitions_version: tosca_simple_yaml_1_0\na: &x [1]\nb: *x\n"
    )
    resolver = ImportResolver(
        ResolverConfig(
            types_dir=str(tmp_path),
            rules=(ImportRule(url_prefix="https://t.example.org/", directory="lib"),),
        )
    )
    with pytest.raises(ImportRejected, match="anchor"):
        resolver.resolve(["https://t.example.org/bad.yaml"])
