"""Offline resolution of TOSCA `imports`.

tosca-parser 2.15.0 looks an import URL up in `local_defs` (exact key) and
otherwise fetches it with urllib and no timeout (SSRF, hangs). We therefore
resolve the whole import closure ourselves before the parser runs: every URL
must match a configured rule that maps it into a local directory of type files
(or, only when explicitly enabled, be fetched from an allow-listed host with a
timeout and a size cap, and cached). Anything else is refused with a clear
error: unknown URLs, `file:` URLs, absolute or relative paths in the user's
template, `repository:` imports, paths escaping their root, missing files.

The type files are a runtime dependency, configured by `types_dir` (see
`default_types_dir`). The project ships no copy of them.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import msgspec

from .errors import ImportRejected, TemplateError

TYPES_DIR_ENV = "ORCH_TOSCA_TYPES_DIR"
_SHARED_CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "tosca"


class ImportRule(msgspec.Struct, frozen=True, kw_only=True):
    """Map URLs starting with `url_prefix` to files under `directory`.

    `url_prefix` may contain one `{ref}` placeholder (a git tag or branch).
    `refs` lists the refs accepted for it; empty means any ref. The rest of the
    URL after the prefix is the file's path relative to `directory`, which is
    itself relative to the resolver's `types_dir` unless absolute.
    """

    url_prefix: str
    directory: str
    refs: tuple[str, ...] = ()


class FetchConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Network fetching of imports that no rule maps. Disabled by default."""

    enabled: bool = False
    allowed_hosts: tuple[str, ...] = ()
    timeout_seconds: float = 5.0
    max_bytes: int = 2 * 1024 * 1024
    cache_dir: str | None = None


class ResolverConfig(msgspec.Struct, frozen=True, kw_only=True):
    types_dir: str | None
    rules: tuple[ImportRule, ...]
    fetch: FetchConfig = FetchConfig()
    max_type_file_bytes: int = 2 * 1024 * 1024
    max_type_file_depth: int = 64
    max_type_file_nodes: int = 200_000
    max_import_files: int = 64


# The INDIGO / INFN type libraries, as the corpus README maps them. Mapping
# several refs onto one snapshot is deliberate (it is what the corpus results
# in reference/tosca-parser-offline.md section 5 were measured with); in
# production keep one directory per released tag instead.
_INDIGO_DC = "indigo-dc/tosca-types"
_INFN_CLOUD = "ffornari90/tosca-types"  # INFN Cloud tosca-types release 3.4.0
_INDIGO_DC_REFS = ("master", "devel", "dodas_roll", "add-ek")
_INFN_REFS = ("master", "v3.4.0")
_INDIGO_PAAS_REFS = ("main", "master")

DEFAULT_RULES: tuple[ImportRule, ...] = (
    ImportRule(
        url_prefix="https://raw.githubusercontent.com/indigo-dc/tosca-types/{ref}/",
        directory=_INDIGO_DC,
        refs=_INDIGO_DC_REFS,
    ),
    ImportRule(
        url_prefix="https://github.com/indigo-dc/tosca-types/raw/{ref}/",
        directory=_INDIGO_DC,
        refs=_INDIGO_DC_REFS,
    ),
    ImportRule(
        url_prefix="https://baltig.infn.it/infn-cloud/tosca-types/raw/{ref}/",
        directory=_INFN_CLOUD,
        refs=_INFN_REFS,
    ),
    ImportRule(
        url_prefix="https://baltig.infn.it/infn-cloud/tosca-types/-/raw/{ref}/",
        directory=_INFN_CLOUD,
        refs=_INFN_REFS,
    ),
    # indigo-paas/tosca-types has no licence file, so no copy exists; its base,
    # docker and kubernetes files match INFN Cloud's 3.4.0 layout.
    ImportRule(
        url_prefix="https://github.com/indigo-paas/tosca-types/raw/{ref}/",
        directory=_INFN_CLOUD,
        refs=_INDIGO_PAAS_REFS,
    ),
    ImportRule(
        url_prefix="https://raw.githubusercontent.com/indigo-paas/tosca-types/{ref}/",
        directory=_INFN_CLOUD,
        refs=_INDIGO_PAAS_REFS,
    ),
)


def default_types_dir() -> str | None:
    """`$ORCH_TOSCA_TYPES_DIR`, else the shared corpus next to the repository, else None."""
    configured = os.environ.get(TYPES_DIR_ENV)
    if configured:
        return configured
    if _SHARED_CORPUS.is_dir():
        return str(_SHARED_CORPUS.resolve())
    return None


def default_resolver_config(types_dir: str | None = None) -> ResolverConfig:
    return ResolverConfig(
        types_dir=types_dir if types_dir is not None else default_types_dir(),
        rules=DEFAULT_RULES,
    )


class ImportClosure(msgspec.Struct, frozen=True):
    """What the parser may read: `local_defs` for tosca-parser and the set of allowed files."""

    local_defs: dict[str, str]
    files: frozenset[str]


_REF_RE = r"(?P<ref>[A-Za-z0-9][A-Za-z0-9._\-]{0,99})"
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._\-]*$")
_YAML_SUFFIXES = (".yaml", ".yml")


class _CompiledRule:
    def __init__(self, rule: ImportRule, types_dir: str | None) -> None:
        self.rule = rule
        prefix = rule.url_prefix
        if prefix.count("{ref}") > 1:
            raise ValueError(f"import rule {prefix!r}: at most one {{ref}} placeholder")
        head, sep, tail = prefix.partition("{ref}")
        pattern = re.escape(head) + (_REF_RE + re.escape(tail) if sep else "")
        self.regex = re.compile(pattern)
        directory = Path(rule.directory)
        if not directory.is_absolute():
            directory = (
                Path(types_dir) / directory if types_dir else Path("/nonexistent") / directory
            )
        self.root = directory

    def match(self, url: str) -> tuple[str | None, str] | None:
        found = self.regex.match(url)
        if not found:
            return None
        ref = found.groupdict().get("ref")
        return ref, url[found.end() :]


def _describe(url: str) -> str:
    return url if len(url) <= 200 else url[:200] + "…"


class ImportResolver:
    """Maps import URLs to local type files, walks the import closure, caches type files.

    Thread-safe; one instance per configuration (each worker process builds its own).
    """

    def __init__(self, config: ResolverConfig | None = None) -> None:
        self.config = config or default_resolver_config()
        self._rules = [_CompiledRule(rule, self.config.types_dir) for rule in self.config.rules]
        self._files: dict[str, tuple[int, int, object]] = {}
        self._lock = threading.Lock()
        self.fingerprint = hashlib.sha256(msgspec.json.encode(self.config)).hexdigest()

    # ---- single URL -------------------------------------------------------------------

    def map_url(self, url: str) -> Path:
        """The local file for an import URL, or ImportRejected."""
        if not isinstance(url, str) or not url.strip():
            raise ImportRejected("an import has an empty or non-text file name")
        url = url.strip()
        parts = urlsplit(url)
        if not parts.scheme or parts.scheme == "file" or not parts.netloc:
            raise ImportRejected(
                f'import "{_describe(url)}" is not allowed: only https URLs of the known '
                "type libraries can be imported (no local files or relative paths)"
            )
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ImportRejected(f'import "{_describe(url)}" is not allowed: unexpected URL parts')
        for compiled in self._rules:
            matched = compiled.match(url)
            if matched is None:
                continue
            ref, rel = matched
            allowed_refs = compiled.rule.refs
            if ref is not None and allowed_refs and ref not in allowed_refs:
                raise ImportRejected(
                    f'import "{_describe(url)}" refers to version "{ref}" of the type library, '
                    f"which is not available (available: {', '.join(allowed_refs)})"
                )
            return self._local_file(compiled.root, rel, url)
        if self.config.fetch.enabled:
            return self._fetch(url)
        raise ImportRejected(
            f'import "{_describe(url)}" is not allowed: it is not one of the known '
            "INDIGO/INFN type libraries"
        )

    def _local_file(self, root: Path, rel: str, url: str) -> Path:
        segments = rel.split("/")
        if not rel or not all(_SAFE_SEGMENT.match(s) for s in segments):
            raise ImportRejected(f'import "{_describe(url)}" is not allowed: unexpected file path')
        if not rel.endswith(_YAML_SUFFIXES):
            raise ImportRejected(f'import "{_describe(url)}" is not a YAML type file')
        try:
            real_root = root.resolve(strict=True)
            path = (real_root / PurePosixPath(rel)).resolve(strict=True)
        except (OSError, RuntimeError):
            raise ImportRejected(
                f'import "{_describe(url)}" is not available offline (no such type file)'
            ) from None
        if not path.is_relative_to(real_root) or not path.is_file():
            raise ImportRejected(
                f'import "{_describe(url)}" is not available offline (no such type file)'
            )
        return path

    def _fetch(self, url: str) -> Path:
        fetch = self.config.fetch
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme != "https" or host not in {h.lower() for h in fetch.allowed_hosts}:
            raise ImportRejected(
                f'import "{_describe(url)}" is not allowed: its host is not on the allow-list'
            )
        if not parts.path.endswith(_YAML_SUFFIXES):
            raise ImportRejected(f'import "{_describe(url)}" is not a YAML type file')
        cache_dir = Path(fetch.cache_dir) if fetch.cache_dir else None
        if cache_dir is None:
            raise ImportRejected("fetching imports is enabled but no cache directory is set")
        target = cache_dir / (hashlib.sha256(url.encode()).hexdigest() + ".yaml")
        if target.is_file():
            return target
        import httpx  # only when fetching is enabled

        try:
            with httpx.Client(timeout=fetch.timeout_seconds, follow_redirects=False) as client:
                with client.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise ImportRejected(
                            f'import "{_describe(url)}" could not be fetched '
                            f"(HTTP {response.status_code})"
                        )
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > fetch.max_bytes:
                            raise ImportRejected(f'import "{_describe(url)}" is too large')
        except httpx.HTTPError:
            raise ImportRejected(f'import "{_describe(url)}" could not be fetched') from None
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(bytes(body))
        tmp.replace(target)
        return target

    # ---- closure ----------------------------------------------------------------------

    def resolve(self, imports: object) -> ImportClosure:
        """Walk the template's `imports` and those of every type file they reach."""
        local_defs: dict[str, str] = {}
        files: set[str] = set()
        pending: list[tuple[object, Path | None]] = [(imports, None)]
        while pending:
            section, importer = pending.pop()
            for entry in _import_entries(section):
                if importer is not None and not _looks_like_url(entry):
                    path = self._relative_in_type_file(entry, importer)
                else:
                    if entry != entry.strip():
                        raise ImportRejected(
                            f'import "{_describe(entry.strip())}" has stray spaces'
                        )
                    path = self.map_url(entry)
                    # tosca-parser looks the URL up as an exact key.
                    local_defs[entry] = str(path)
                key = str(path)
                if key in files:
                    continue
                files.add(key)
                if len(files) > self.config.max_import_files:
                    raise ImportRejected(
                        f"the template imports more than {self.config.max_import_files} type files"
                    )
                data = self._load(path)
                if isinstance(data, dict) and data.get("imports"):
                    pending.append((data["imports"], path))
        return ImportClosure(local_defs=local_defs, files=frozenset(files))

    def _relative_in_type_file(self, name: str, importer: Path) -> Path:
        """A relative import inside a type file stays inside that file's library."""
        for compiled in self._rules:
            try:
                root = compiled.root.resolve(strict=True)
            except (OSError, RuntimeError):
                continue
            if importer.is_relative_to(root):
                rel = (importer.parent / name).resolve()
                if rel.is_relative_to(root) and rel.is_file():
                    return rel
        raise ImportRejected(f'a type library imports "{_describe(name)}", which is not available')

    # ---- type files -------------------------------------------------------------------

    def _load(self, path: Path) -> object:
        from .yamlsafe import load_checked

        key = str(path)
        stat = path.stat()
        with self._lock:
            cached = self._files.get(key)
        if cached and cached[0] == stat.st_mtime_ns and cached[1] == stat.st_size:
            return cached[2]
        if stat.st_size > self.config.max_type_file_bytes:
            raise ImportRejected(f'type file "{path.name}" is too large')
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise ImportRejected(f'type file "{path.name}" cannot be read') from None
        try:
            data = load_checked(
                text,
                max_depth=self.config.max_type_file_depth,
                max_nodes=self.config.max_type_file_nodes,
                what=f'type file "{path.name}"',
                strict_keys=False,
            )
        except TemplateError as exc:
            raise ImportRejected(exc.message) from None
        with self._lock:
            self._files[key] = (stat.st_mtime_ns, stat.st_size, data)
        return data

    def load_type_file(self, path: str) -> object:
        """A private deep copy of a (cached) type file; the parser mutates what it gets."""
        return copy.deepcopy(self._load(Path(path)))


_shared: dict[str, ImportResolver] = {}
_shared_lock = threading.Lock()


def shared_resolver(config: ResolverConfig | None = None) -> ImportResolver:
    """One resolver (so one type-file cache) per configuration, per process.

    Without `config`, the default configuration (`default_resolver_config`)."""
    resolver = ImportResolver(config)
    with _shared_lock:
        return _shared.setdefault(resolver.fingerprint, resolver)


def _looks_like_url(name: str) -> bool:
    parts = urlsplit(name.strip())
    return bool(parts.scheme) and (bool(parts.netloc) or parts.scheme == "file")


def _import_entries(section: object) -> Iterator[str]:
    """The file names in an `imports` section (short, named and `{file: …}` forms)."""
    if not isinstance(section, list):
        raise ImportRejected('"imports" must be a list')
    for item in section:
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            for name, value in item.items():
                if isinstance(value, str):
                    # `- file: url` (TOSCA 1.2) and `- name: url` look alike; both name a file.
                    yield value
                elif isinstance(value, dict):
                    if value.get("repository") is not None:
                        raise ImportRejected(
                            f'import "{name}" uses a repository, which is not allowed'
                        )
                    file_name = value.get("file")
                    if not isinstance(file_name, str):
                        raise ImportRejected(f'import "{name}" has no file')
                    yield file_name
                else:
                    raise ImportRejected(f'import "{name}" is not a file name')
        else:
            raise ImportRejected('an entry of "imports" is not a file name')
