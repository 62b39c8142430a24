"""Service settings: read from the environment (``DUPSTREAM_*``) and/or a YAML file.

Only entry points (the CLI) build a ``Settings``; every component takes plain keyword arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dupstream.core.errors import ConfigError


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:19092"
    input_topic: str = "dupstream.uploads"
    output_topic: str = "dupstream.verdicts"
    dlq_topic: str = "dupstream.dlq"
    group_id: str = "dupstream"
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 1000
    max_poll_interval_ms: int = 300000
    #: cooperative-sticky (incremental rebalances) or an eager strategy (range, roundrobin)
    assignment_strategy: str = "cooperative-sticky"
    #: extra librdkafka properties (SASL/TLS: security.protocol, sasl.mechanisms, ...)
    extra: dict[str, str] = Field(default_factory=dict)
    #: credentials kept out of logs and reprs
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None


class S3Settings(BaseModel):
    endpoint: str = "127.0.0.1:19000"
    access_key: SecretStr = SecretStr("dupstream")
    secret_key: SecretStr = SecretStr("dupstream")
    secure: bool = False
    region: str = "us-east-1"
    max_blob_bytes: int = 50 * 1024 * 1024
    fetch_workers: int = 8
    timeout_s: float = 10.0
    #: retries inside one fetch (jittered exponential backoff) before the batch moves on
    retries: int = 3
    #: how long an event whose blob fetch keeps failing transiently is retried (deferred: held
    #: and retried on its own, its successors go on) before it is dead-lettered as
    #: blob_unavailable
    transient_budget_s: float = 300.0


class ImageSettings(BaseModel):
    max_pixels: int = 50_000_000
    max_side: int = 20_000


class ModelSettings(BaseModel):
    embedder: Literal["sscd", "sscd_distilled"] = "sscd"
    #: object detector for the semantic signal ("none": visual evidence only)
    detector: Literal["yolov3_tiny", "yolov3_tiny_cv2", "yolov3_tiny_ort", "yolov3_tiny_ort_int8",
                      "faster_rcnn", "none"] = "yolov3_tiny_ort"
    #: run the shipped GCN over the object graph (graph similarity in Ss)
    graph: bool = True
    top_k: int = 12
    threads: int = 2
    #: folder with the detector's weights under their usual names (default: the packaged ones);
    #: checked against their sha256 at start like the packaged ones
    detector_weights_dir: str | None = None
    #: the detector's input size (pixels, a multiple of 32; YOLOv3-tiny was trained at 416)
    detector_size: int = Field(default=416, ge=64, multiple_of=32)
    #: ONNX Runtime intra-op threads of the detector (it runs after the embedder, never beside
    #: it: 2 measured 12-14 % faster than 1 in the whole pipeline on 2 cores)
    detector_threads: int = Field(default=2, ge=1)
    #: where the ONNX export of the detector lives (default: the cache beside the weights)
    detector_cache_dir: str | None = None
    #: JPEG draft decode: a JPEG at least twice this size decodes at the largest DCT reduction
    #: still at least this size (null: always full resolution)
    draft_side: int | None = Field(default=1024, ge=64)
    #: threads that run a batch's hash stage (PDQ, thumbnails, content box, descriptors) while
    #: the visual embedder runs (0: in line, before it); see docs/PERFORMANCE.md
    hash_workers: int = Field(default=0, ge=0)
    #: the cascade: objects (detector + GCN) only for images judged a copy or whose tenant's
    #: policy needs them, when the decision does not read them (the shipped learned decision
    #: does not); a reference's objects when a later match first needs them. false: objects
    #: for every image at extraction
    cascade: bool = True


class MilvusSettings(BaseModel):
    """The Milvus server of ``state.backend: milvus`` (see docs/STATE.md "Milvus backend")."""

    #: the Milvus proxy, e.g. http://milvus.db:19530 (https:// for TLS)
    uri: str = "http://127.0.0.1:19530"
    #: ``user:password`` or an API key (kept out of logs and reprs)
    token: SecretStr | None = None
    db_name: str = ""
    #: TLS: verify the server with this CA / certificate file, expecting this server name
    secure: bool = False
    server_pem_path: str | None = None
    server_name: str | None = None
    #: collection names start with this (default: ``state.prefix``); one per indexed array + PDQ
    collection_prefix: str | None = None
    #: Strong: an add is searchable by every replica once it returns (waits one time tick,
    #: ~0.2 s, per search); Session: by the writer only; Bounded/Eventually: later
    consistency: Literal["Strong", "Session", "Bounded", "Eventually"] = "Strong"
    #: float vectors (the engine's embeddings): index type and parameters
    float_index: Literal["IVF_SQ8", "HNSW", "FLAT", "IVF_FLAT"] = "IVF_SQ8"
    nlist: int = Field(default=1024, gt=0)
    nprobe: int = Field(default=32, gt=0)
    hnsw_m: int = Field(default=16, gt=0)
    hnsw_ef_construction: int = Field(default=200, gt=0)
    hnsw_ef: int = Field(default=128, gt=0)
    #: PDQ hashes: BIN_IVF_FLAT lists / lists probed
    pdq_nlist: int = Field(default=1024, gt=0)
    pdq_nprobe: int = Field(default=32, gt=0)
    #: partitions the tenant partition key is hashed into
    partitions: int = Field(default=64, gt=0, le=4096)
    #: per request; slower or failing requests are transient errors (the event is retried)
    timeout_s: float = Field(default=10.0, gt=0)


class StateSettings(BaseModel):
    """The index every replica shares: the index-updates feed and snapshots in object storage."""

    #: compacted topic every replica publishes its additions to and applies (own ones included)
    updates_topic: str = "dupstream.index-updates"
    replication: bool = True
    #: object storage for snapshots and the per-image record store
    bucket: str = "dupstream-state"
    prefix: str = "dupstream"
    #: load the latest snapshot at start (then replay the feed from its offsets)
    restore: bool = True
    #: write a snapshot this often (seconds, 0 = never; a snapshot job can do it instead)
    snapshot_interval_s: float = 300.0
    snapshot_keep: int = 3
    #: keep every image's compact record in object storage for LRU misses
    record_store: bool = True
    scope: Literal["tenant", "global"] = "tenant"
    index_kind: Literal["auto", "flat", "ivf", "hnsw", "ivfpq"] = "auto"
    index_switch_at: int = 50_000
    index_nlist: int | None = None
    index_nprobe: int = 32
    records_max_items: int = 100_000
    records_max_bytes: int = 512 * 1024 * 1024
    #: record-store write-behind: records waiting to be written to object storage, at most this
    #: many and bytes; a full queue holds up adding an image for up to record_queue_wait_s, then
    #: the event is retried later (deferred); record_writers threads write them
    record_queue_max_items: int = Field(default=4096, gt=0)
    record_queue_max_bytes: int = Field(default=128 * 1024 * 1024, gt=0)
    record_queue_wait_s: float = Field(default=5.0, ge=0)
    record_writers: int = Field(default=2, gt=0)
    #: how long a commit waits for the records its events added to be written (not written by
    #: then: no commit yet, the records stay queued and are retried)
    record_flush_timeout_s: float = Field(default=10.0, gt=0)
    replication_window_s: float = 60.0
    replica_id: str | None = None
    #: use a snapshot / index updates written by another model (embedder or weights) instead of
    #: refusing them at start (model_mismatch); vectors of two models are not comparable, see
    #: docs/STATE.md "Model identity and migration" before setting this
    allow_model_mismatch: bool = False
    #: where the vectors and PDQ hashes live: ``embedded`` (FAISS in every replica, kept in sync
    #: by the index-updates feed and snapshots) or ``milvus`` (one shared Milvus index: no feed,
    #: no snapshot, no restore; records stay in object storage). With ``milvus``, replication,
    #: restore and snapshot_interval_s are switched off.
    backend: Literal["embedded", "milvus"] = "embedded"
    milvus: MilvusSettings = Field(default_factory=MilvusSettings)

    @model_validator(mode="after")
    def _shared_index_needs_no_feed(self) -> StateSettings:
        if self.backend == "milvus":
            self.replication, self.restore, self.snapshot_interval_s = False, False, 0.0
        return self


class PolicySettings(BaseModel):
    """Decision policy: which calibrator and cut-off apply (``workers/assets/decision.json``)."""

    #: default domain of uploads (``photos``, ``digits``, ``cctv``; unset = the default model)
    domain: str | None = None
    #: ``balanced`` (max F1), ``precision`` (>= 0.99 on validation) or ``recall``
    preference: Literal["balanced", "precision", "recall"] = "balanced"
    #: move the cut-off by the pair's difficulty (objects in the query, visual/semantic spread)
    adaptive: bool = True
    #: per-tenant overrides, e.g. {"cams-eu": "cctv"} / {"copyright-desk": "recall"}
    tenant_domains: dict[str, str] = Field(default_factory=dict)
    tenant_preferences: dict[str, Literal["balanced", "precision", "recall"]] = Field(
        default_factory=dict)
    #: tenants for which an object entering the scene breaks the duplicate (the ``cctv``
    #: domain always has this policy)
    scene_change_tenants: list[str] = Field(default_factory=list)
    #: half-width of the band around the cut-off in which verdicts are flagged for review
    review_margin: float = 0.15
    #: low-information pictures (``DecisionPolicy.low_information``): this share of a flat
    #: thumbnail, or a PDQ quality of at most ``low_information_pdq_quality``, makes one; its
    #: P(copy) is scaled by ``low_information_p_scale`` unless near-identical by PDQ (1.0: off)
    low_information_flat_min: float = Field(0.95, gt=0.0, le=1.0)
    low_information_p_scale: float = Field(0.1, ge=0.0, le=1.0)
    low_information_pdq_quality: int = Field(0, ge=-1, le=100)
    #: a query whose registration verified with at least this P(copy) is placed: its less
    #: similar open candidates are not registered (above 1: register up to the bound)
    verify_stop_p_copy: float = Field(0.9, ge=0.0, le=2.0)


class StartupSettings(BaseModel):
    """How ``dupstream run`` starts."""

    #: how long start-up waits for S3 and the Kafka broker to answer (and retries loading the
    #: index snapshot) before it exits with one line naming the address (exit code 7)
    budget_s: float = Field(default=15.0, ge=0)


class ServeToken(BaseModel):
    """One bearer token of ``dupstream serve``, bound to a tenant (and optionally to banks)."""

    #: the bearer token (kept out of logs and reprs)
    token: SecretStr
    #: the tenant this token speaks for: it sees (and adds, deletes) only this tenant's uploads
    tenant: str
    #: reference banks it may match against and write to (None: every bank; []: none)
    banks: list[str] | None = None


class ServeSettings(BaseModel):
    """``dupstream serve``: the synchronous lookup server (a read replica of the index)."""

    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    #: bearer tokens, e.g. DUPSTREAM_SERVE__TOKENS='[{"token": "...", "tenant": "acme"}]'
    tokens: list[ServeToken] = Field(default_factory=list)
    #: request bodies larger than this are refused (413 body_too_large)
    max_body_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    #: requests waiting for the model at most (more: 503 overloaded with Retry-After)
    queue_max: int = Field(default=64, gt=0)
    #: micro-batch bounds: requests per model batch, and how long the first one waits for more
    batch_max: int = Field(default=8, gt=0)
    batch_wait_ms: float = Field(default=5.0, ge=0)
    #: one request's limit, queueing included (over it: 503 timeout with Retry-After)
    request_timeout_s: float = Field(default=30.0, gt=0)
    #: the Retry-After (seconds) of a 503
    retry_after_s: int = Field(default=1, ge=0)
    #: buckets a JSON {bucket, key} lookup may read (empty: any the S3 credentials can)
    buckets: list[str] = Field(default_factory=list)
    #: how long an add waits for the broker to acknowledge its index update
    publish_timeout_s: float = Field(default=10.0, gt=0)


class BatchSettings(BaseModel):
    max_events: int = 16
    max_wait_ms: int = 200
    #: extract a polled batch's features (decode, hashes, embedding) while the batch before it
    #: is judged; off: when it is judged (the same verdicts, one core idle more of the time)
    extract_ahead: bool = True


class Settings(BaseSettings):
    """Everything ``dupstream run`` needs. Env: ``DUPSTREAM_KAFKA__BOOTSTRAP_SERVERS`` etc."""

    model_config = SettingsConfigDict(
        env_prefix="DUPSTREAM_", env_nested_delimiter="__", extra="forbid"
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    image: ImageSettings = Field(default_factory=ImageSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    startup: StartupSettings = Field(default_factory=StartupSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    metrics_port: int = 0
    #: hand freed heap memory back to the OS (glibc malloc_trim) at most this often, between
    #: batches, and after each snapshot (seconds; 0 = never). See docs/PERFORMANCE.md, Soak
    heap_trim_interval_s: float = Field(default=30.0, ge=0)

    @classmethod
    def load(cls, yaml_path: str | Path | None = None) -> Settings:
        """Settings from a YAML file (optional) overridden by ``DUPSTREAM_*`` env variables."""
        data: dict[str, Any] = {}
        if yaml_path is not None:
            try:
                data = yaml.safe_load(Path(yaml_path).read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"cannot read settings file {yaml_path}: {exc}") from exc
            if not isinstance(data, dict):
                raise ConfigError(f"{yaml_path}: top level must be a mapping")
            unknown = _unknown_keys(cls, data)
            if unknown:
                raise ConfigError(f"{yaml_path}: unknown setting(s) {', '.join(unknown)} "
                                  "(see README, Configuration)")
        try:
            env = cls()  # env + defaults
        except ValidationError as exc:  # a bad DUPSTREAM_* value: name the variable
            raise ConfigError(_describe(exc, env=True)) from exc
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        merged = _deep_merge(data, env.model_dump(exclude_unset=True))
        try:
            return cls.model_validate(_unwrap_secrets(merged))
        except ValidationError as exc:  # a bad YAML value (env values passed above)
            raise ConfigError(_describe(exc, env=False, source=yaml_path)) from exc
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc


def _describe(exc: ValidationError, *, env: bool, source: str | Path | None = None) -> str:
    """One line per bad value, naming the environment variable or the YAML key."""
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ())]
        where = ("DUPSTREAM_" + "__".join(loc).upper() if env
                 else f"{source or 'settings'}: {'.'.join(loc)}")
        parts.append(f"{where}={err.get('input')!r}: {err.get('msg')}")
    return "; ".join(parts)


def _unknown_keys(model: type[BaseModel], data: dict[str, Any], prefix: str = "") -> list[str]:
    """Keys of a YAML mapping that no field of ``model`` (recursively) has."""
    out = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            out.append(prefix + str(key))
            continue
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel) and isinstance(value, dict):
            out += _unknown_keys(sub, value, f"{prefix}{key}.")
    return out


def _unwrap_secrets(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _unwrap_secrets(v) for k, v in value.items()}
    return value


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
