"""The ``dupstream`` command line: run, scan, compare, eval (more subcommands join as they land).

Settings are read from the environment (``DUPSTREAM_*``) and an optional YAML file here, at the
entry point, and nowhere else.
"""

from __future__ import annotations

import argparse
import csv
import enum
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from dupstream import __version__
from dupstream.core.errors import (
    ConfigError,
    DupstreamError,
    ModelError,
    ServerUnavailable,
    StateError,
)


class ExitCode(enum.IntEnum):
    """The documented exit codes of every ``dupstream`` command (README: "Exit codes")."""

    OK = 0
    #: the command ran, but some inputs failed (compare/scan rows with an ``error``)
    INPUT_ERRORS = 1
    #: bad command-line usage (argparse's own code)
    USAGE = 2
    #: invalid or missing settings (environment, YAML)
    CONFIG = 3
    #: a model's weights or artefacts are missing, corrupt or fail their sha256 check
    MODEL = 4
    #: persisted state cannot be used (e.g. a snapshot of another embedder)
    STATE = 5
    #: any other dupstream error
    ERROR = 6
    #: S3 or the Kafka broker did not answer within the start-up budget
    #: (``DUPSTREAM_STARTUP__BUDGET_S``), or stayed unreachable through it
    UNAVAILABLE = 7


def exit_code_for(exc: DupstreamError) -> ExitCode:
    if isinstance(exc, ServerUnavailable) or exc.transient:
        return ExitCode.UNAVAILABLE
    if isinstance(exc, ConfigError):
        return ExitCode.CONFIG
    if isinstance(exc, ModelError):
        return ExitCode.MODEL
    if isinstance(exc, StateError):
        return ExitCode.STATE
    return ExitCode.ERROR

def _iter_paths(paths: Sequence[str]) -> Iterator[Path]:
    """Files in the given order; a directory contributes its image files sorted by path."""
    from dupstream.app.scanner import collect

    yield from collect(paths).files


def _open_out(path: str | None):
    """The output file (``-`` or none: stdout); one line and exit 2 when it cannot be written."""
    if not path or path == "-":
        return sys.stdout
    try:
        return open(path, "w")
    except OSError as exc:
        print(f"dupstream: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(ExitCode.USAGE) from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _quiet_warnings() -> None:
    """Library deprecation chatter (torch's FutureWarnings, ...) stays off stderr unless -v."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch(\.|$)")


# -- scan ----------------------------------------------------------------------------------------
def cmd_scan(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dupstream.app.scanner import collect, run_scan
    from dupstream.engine.build import build_deduper

    found = collect(args.paths)
    if found.missing:  # before any model loads: a typo costs nothing
        for m in found.missing:
            print(f"dupstream: not found: {m}", file=sys.stderr)
        return ExitCode.USAGE
    groups_out = _open_out(args.groups) if args.groups else None
    report_out = _open_out(args.report) if args.report else None
    out = _open_out(args.out)  # unwritable: one line, exit 2, before the models load
    quiet = args.quiet
    t0 = time.perf_counter()
    if not quiet:
        print(f"loading models ({args.embedder}, detector {args.detector}) ...", file=sys.stderr,
              flush=True)
    policy = {"preference": args.preference,
              **({"domain": args.domain} if args.domain else {})}
    deduper = build_deduper(embedder=args.embedder, detector=args.detector,
                            graph=not args.no_graph, threads=args.threads,
                            max_pixels=args.max_pixels, policy=policy,
                            cascade=not args.no_cascade)
    deduper.warm_up()  # weights/artefact faults: exit 4 here, never a per-image error
    index = None
    if args.index:
        from dupstream.app.localindex import LocalIndex

        try:
            index = LocalIndex(args.index).open(deduper)  # another model's index: exit 5
        except OSError as exc:
            print(f"dupstream: cannot use index {args.index}: {exc.strerror or exc}",
                  file=sys.stderr)
            return ExitCode.USAGE
    if not quiet:
        print(f"models ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    # every image redraws the bar (models run at ~10-30 img/s: no throttling needed, and a user
    # sees each file counted)
    bar = tqdm(total=len(found.files), unit="img", disable=quiet or not sys.stderr.isatty(),
               dynamic_ncols=True, mininterval=0, miniters=1)

    def on_row(row: dict) -> None:
        out.write(json.dumps(row) + "\n")
        bar.set_postfix_str(Path(row["image_id"]).name[-30:], refresh=False)
        bar.update(1)

    try:
        res = run_scan(deduper, found, tenant=args.tenant, batch=args.batch, index=index,
                       on_row=on_row)
        bar.close()
        out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    if index is not None:
        snap = index.save(deduper)
        print(f"index {args.index}: {res.reused} files unchanged since the last scan, "
              f"{res.judged} judged now; {len(deduper)} images indexed (snapshot {snap})",
              file=sys.stderr)
    print(f"scanned {res.judged} images: {json.dumps(dict(res.counts))}", file=sys.stderr)
    if found.skipped:
        print(f"skipped {sum(found.skipped.values())} files: {json.dumps(dict(found.skipped))}",
              file=sys.stderr)
    for row in res.failed:
        print(f"failed: {row['image_id']}: {row['error']}: {row['message']}", file=sys.stderr)
    groups = res.groups
    if groups_out is not None:
        json.dump({"groups": [g.to_dict() for g in groups],
                   "failed": [{"path": r["image_id"], "error": r["error"],
                               "message": r["message"]} for r in res.failed]},
                  groups_out, indent=1)
        groups_out.write("\n")
        if groups_out is not sys.stdout:
            groups_out.close()
    if report_out is not None:
        from dupstream.app.report import render

        report_out.write(render(groups, failed=res.failed, skipped=found.skipped,
                                scanned=len(found.files)))
        if report_out is not sys.stdout:
            report_out.close()
        print(f"report: {args.report}", file=sys.stderr)
    # the summary: on stdout when the rows went to a file, else after them on stderr
    from dupstream.app.groups import summary

    text = summary(groups)
    print(f"{len(groups)} duplicate groups, {sum(len(g.members) - 1 for g in groups)} files "
          "besides their keepers" + (":\n" + text if text else ""),
          file=sys.stdout if args.out and args.out != "-" else sys.stderr)
    if res.failed and not args.allow_errors:
        return ExitCode.INPUT_ERRORS
    return ExitCode.OK


# -- compare -------------------------------------------------------------------------------------
def cmd_compare(args: argparse.Namespace) -> int:
    from dupstream.engine.build import build_deduper

    if bool(args.pairs) == bool(args.images):
        print("compare: give either two images A B, or --pairs pairs.csv", file=sys.stderr)
        return ExitCode.USAGE
    if args.images and len(args.images) != 2:
        print("compare: exactly two images A B", file=sys.stderr)
        return ExitCode.USAGE
    missing = [p for p in ([args.pairs] if args.pairs else args.images) if not Path(p).is_file()]
    if missing:  # before any model loads
        print(f"dupstream: not found: {', '.join(missing)}", file=sys.stderr)
        return ExitCode.USAGE
    deduper = build_deduper(embedder=args.embedder, detector=args.detector,
                            graph=not args.no_graph, threads=args.threads)
    deduper.warm_up()  # weights/artefact faults: exit 4 here, never a per-image error
    if args.images:
        if len(args.images) != 2:
            print("compare: exactly two images A B", file=sys.stderr)
            return ExitCode.USAGE
        a, b = args.images
        try:
            row = {"a": a, "b": b, **deduper.compare(_read(Path(a)), _read(Path(b)))}
        except DupstreamError as exc:
            print(f"compare: {exc.reason}: {exc}", file=sys.stderr)
            return ExitCode.INPUT_ERRORS
        out = _open_out(args.out)
        out.write(json.dumps(row, indent=None if args.out else 2) + "\n")
        if out is not sys.stdout:
            out.close()
        return ExitCode.OK
    rc = ExitCode.OK
    with open(args.pairs, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"a", "b"} <= set(reader.fieldnames):
            print("compare: the CSV needs a header with columns a,b", file=sys.stderr)
            return ExitCode.USAGE
        out = _open_out(args.out)
        try:
            for rec in reader:
                a, b = rec["a"], rec["b"]
                try:
                    row = {"a": a, "b": b, **deduper.compare(_read(Path(a)), _read(Path(b)))}
                except DupstreamError as exc:
                    row = {"a": a, "b": b, "probability": None, "verdict": None,
                           "error": exc.reason, "message": str(exc)}
                    rc = ExitCode.INPUT_ERRORS
                out.write(json.dumps(row) + "\n")
        finally:
            if out is not sys.stdout:
                out.close()
    return rc


# -- run -----------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from dupstream.app.settings import Settings
    from dupstream.app.startup import ServerWait, interruptible, probes

    log = logging.getLogger("dupstream")
    settings = Settings.load(args.config)
    # until the service runs, SIGINT/SIGTERM raise Interrupted wherever start-up is (the server
    # wait, the snapshot load, the model load): main() turns it into a clean exit
    with interruptible() as hand_over:
        # S3 and the broker are probed (within the start-up budget) while the models load
        servers = ServerWait(probes(settings), budget_s=settings.startup.budget_s).start()
        from dupstream.app.root import build_engine, build_service
        from dupstream.stream.metrics import HealthServer

        # models first: a deployment fault (weights, artefacts) exits 4 whatever state the
        # servers are in
        engine = build_engine(settings)
        log.info("models verified: %s", engine.warm_up())
        log.info("S3 and the Kafka broker answer (%.1f s)", servers.result())
        built = build_service(settings, create_topics=args.create_topics,
                              partitions=args.partitions, engine=engine)
        service = built.service
        health = None
        if built.metrics_port:
            health = HealthServer(metrics=built.metrics, ready=service.readiness,
                                  port=built.metrics_port).start()
            log.info("metrics on :%d", health.port)
        hand_over(service.stop)
    try:
        n = service.run(max_events=args.max_events, idle_exit_s=args.idle_exit)
    finally:
        if health is not None:
            health.stop()
    print(f"processed {n} events", file=sys.stderr)
    return ExitCode.OK


# -- eval ----------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:

    from dupstream.lab.evaluation.runner import EvalConfig, run

    datasets = [] if args.pairs and not args.dataset else (
        ["mnist", "coco", "cctv"] if (args.dataset or "all") == "all" else [args.dataset])
    out = Path(args.out) if args.out else Path("results") / time.strftime("eval-%Y%m%d-%H%M%S")
    cfg = EvalConfig(
        datasets=datasets, out=out, pairs=args.pairs, seed=args.seed, resamples=args.resamples,
        quick=args.quick, ship=args.ship,
        scalability=tuple(args.scalability) if datasets else (),
        detectors=args.detectors.split(",") if args.detectors else None,
        progress=not args.quiet, embedder=args.embedder, threads=args.threads,
        detector=args.detector, graph=not args.no_graph, extra={"before": args.before},
        command="dupstream " + " ".join(sys.argv[1:]) if sys.argv[1:] else "dupstream eval")
    try:
        md = run(cfg)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"eval: {exc}", file=sys.stderr)
        return ExitCode.INPUT_ERRORS
    print(md)
    return ExitCode.OK


# -- parser --------------------------------------------------------------------------------------
def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embedder", default="sscd", choices=["sscd", "sscd_distilled"],
                   help="visual embedder (default: sscd; sscd_distilled is ~3x faster on CPU)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("DUPSTREAM_THREADS", 2)),
                   help="inference threads (default 2)")
    p.add_argument("--detector", default="yolov3_tiny_ort",
                   choices=["yolov3_tiny", "yolov3_tiny_cv2", "yolov3_tiny_ort",
                            "yolov3_tiny_ort_int8", "faster_rcnn", "none"],
                   help="object detector for the semantic signal (default: yolov3_tiny_ort, "
                   "YOLOv3-tiny on ONNX Runtime, offline; yolov3_tiny: the torch module, CUDA fp16 "
                   "on a GPU; faster_rcnn needs its weights in the torch cache; none: visual only)")
    p.add_argument("--no-graph", action="store_true",
                   help="leave the GCN graph similarity out of Ss")
    p.add_argument("--no-cascade", action="store_true",
                   help="find objects for every image (default: only for images judged a copy, "
                   "when the decision does not read them; see docs/PERFORMANCE.md)")


# -- index ---------------------------------------------------------------------------------------
def _index_migrate(args: argparse.Namespace, settings, blobs, out: dict) -> int:
    """``index migrate``: the embedded snapshot at ``state.prefix`` (latest, or ``--snapshot``)
    copied into the Milvus collections of ``state.milvus`` (created when absent)."""
    from dupstream.app.root import memory_config, milvus_memory
    from dupstream.state.migrate import migrate_to_milvus
    from dupstream.state.records import BlobRecordStore
    from dupstream.state.snapshot import load_latest_snapshot, load_snapshot

    st = settings.state
    if st.backend != "milvus":
        print("index migrate copies the embedded snapshot into Milvus: set "
              "DUPSTREAM_STATE__BACKEND=milvus and DUPSTREAM_STATE__MILVUS__URI", file=sys.stderr)
        return ExitCode.USAGE
    config, records = memory_config(st), BlobRecordStore(blobs, prefix=st.prefix)
    kw = {"prefix": st.prefix, "config": config, "replica_id": "migrate",
          "record_store": records}
    restored = (load_snapshot(blobs, args.snapshot, **kw) if args.snapshot
                else load_latest_snapshot(blobs, **kw))
    if restored is None:
        print(f"no snapshot under {st.bucket}/{st.prefix}", file=sys.stderr)
        return ExitCode.USAGE
    target = milvus_memory(st, config, replica_id="migrate", records=None,
                           identity=restored.memory.identity)
    out["migrated_from"] = restored.snapshot_id
    out["migrated"] = migrate_to_milvus(restored.memory, target).to_dict()
    out["stats"] = target.stats()
    print(json.dumps(out, indent=1, default=str))
    return ExitCode.OK


def cmd_index(args: argparse.Namespace) -> int:
    from dupstream.app.root import (
        build_engine,
        build_feed_replayer,
        build_memory,
        build_object_store,
        build_state_store,
        memory_config,
    )
    from dupstream.app.settings import Settings
    from dupstream.state.snapshot import list_snapshots, load_snapshot, write_snapshot

    settings = Settings.load(args.config)
    st = settings.state
    blobs = build_state_store(settings, build_object_store(settings, pool=False))
    out: dict = {"bucket": st.bucket, "prefix": st.prefix}
    if args.action == "migrate":
        return _index_migrate(args, settings, blobs, out)
    if args.action == "list":
        out["snapshots"] = list_snapshots(blobs, prefix=st.prefix)
        if st.backend == "milvus":  # the shared index: its collections and sizes
            stats = build_memory(state=st, blobstore=None)[0].stats()
            out["milvus"] = {"images": stats["images"], "indexes": stats["indexes"]}
        print(json.dumps(out, indent=1))
        return ExitCode.OK
    # restore and snapshot refuse another model's state (the configured one: nothing loaded);
    # stats shows whatever is there, with the model that wrote it
    identity = build_engine(settings).identity if args.action != "stats" else None
    if args.action == "restore" and args.snapshot:
        restored = load_snapshot(blobs, args.snapshot, prefix=st.prefix, identity=identity,
                                 config=memory_config(st))  # verifies every blob
        blobs.put_bytes(f"{st.prefix.strip('/')}/snapshots/LATEST", args.snapshot.encode())
        memory, snap = restored.memory, restored.snapshot_id
        out["restored"] = snap
    else:
        memory, snap = build_memory(state=st, blobstore=blobs, identity=identity)
        out["loaded"] = snap
    if args.action in ("snapshot", "stats") and (args.replay or args.action == "snapshot") \
            and st.backend != "milvus":
        feed = build_feed_replayer(settings, memory)
        try:
            out["replayed_updates"] = feed.start(timeout_s=args.timeout)
            out["feed_caught_up"] = feed.caught_up
        finally:
            feed.close()
    if args.action == "snapshot":
        info = write_snapshot(memory, blobs, prefix=st.prefix, keep=st.snapshot_keep)
        out["written"] = info.snapshot_id
        out["bytes"] = info.bytes
        out["seconds"] = round(info.seconds, 3)
    out["stats"] = memory.stats()
    print(json.dumps(out, indent=1, default=str))
    return ExitCode.OK


# -- serve ---------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from dupstream.app.settings import Settings
    from dupstream.app.startup import ServerWait, interruptible, probes

    log = logging.getLogger("dupstream")
    settings = Settings.load(args.config)
    if args.port is not None:
        settings.serve.port = args.port
    if args.host is not None:
        settings.serve.host = args.host
    with interruptible():  # SIGINT/SIGTERM during start-up: a clean exit
        servers = ServerWait(probes(settings), budget_s=settings.startup.budget_s).start()
        from dupstream.serve.build import build_server
        from dupstream.serve.runner import serve_forever

        log.info("S3 and the Kafka broker answer (%.1f s)", servers.result())
        if args.create_topics:
            from dupstream.app.root import kafka_auth
            from dupstream.stream.kafka import ensure_topics

            st = settings.state
            ensure_topics(bootstrap_servers=settings.kafka.bootstrap_servers,
                          extra=kafka_auth(settings)["extra"],
                          topics={st.updates_topic: args.partitions},
                          compacted={st.updates_topic})
        server = build_server(settings)
    log.info("lookup server on http://%s:%d (OpenAPI at /docs)", settings.serve.host,
             settings.serve.port)
    # until SIGINT/SIGTERM: the requests in hand are finished, then the server is closed
    serve_forever(server, host=settings.serve.host, port=settings.serve.port,
                  access_log=args.access_log, log_level="debug" if args.verbose else "warning")
    return ExitCode.OK


# -- bench ---------------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    from dupstream.bench.pipeline import main as pipeline_main

    argv = ["--images", str(args.images), "--batches", args.batches, "--modes", args.modes,
            "--threads", str(args.threads), "--out", args.out, "--e2e-rate", str(args.e2e_rate),
            "--workload", args.workload, "--rounds", str(args.rounds)]
    if args.e2e:
        argv.append("--e2e")
    return pipeline_main(argv)


# -- train ---------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    if args.decision:
        from dupstream.lab.decision_data import Recipe
        from dupstream.lab.decision_train import ASSETS, run

        run(out=Path(args.out) if args.out else ASSETS, report_dir=Path(args.report),
            seed=args.seed, recipe=Recipe(seed=args.seed), resamples=args.resamples,
            skew_pairs=args.skew_pairs, command=" ".join(["dupstream", *sys.argv[1:]]))
        return ExitCode.OK
    import torch

    from dupstream.lab.train import train

    torch.set_num_threads(args.threads)
    train(out_dir=args.out, seed=args.seed, epochs=args.epochs, lr=args.lr,
          embedder=args.embedder, log=lambda m: print(m, file=sys.stderr))
    return ExitCode.OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dupstream",
        description="Streaming, semantic-aware image de-duplication. Each image gets a verdict: "
        "duplicate (the same picture), near_duplicate (an edited copy) or unique, with the "
        "matched image, the evidence and a calibrated probability.",
    )
    parser.add_argument("--version", action="version", version=f"dupstream {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="the streaming service: Kafka uploads in, verdicts out",
        description="Consume ImageUploaded events (JSON or msgpack) from the input topic, fetch "
        "each image from S3, judge it against everything seen before, publish a verdict keyed by "
        "image_id to the output topic (bad input goes to the dead-letter topic), and commit "
        "offsets only after delivery. Settings: env DUPSTREAM_* (nested with __, e.g. "
        "DUPSTREAM_KAFKA__BOOTSTRAP_SERVERS) over an optional YAML file.")
    run.add_argument("--config", help="YAML settings file (env DUPSTREAM_* overrides it)")
    run.add_argument("--create-topics", action="store_true",
                     help="create the input, output and dead-letter topics if missing")
    run.add_argument("--partitions", type=int, default=3, help="partitions for --create-topics")
    run.add_argument("--max-events", type=int, help="stop after this many events (tests, demos)")
    run.add_argument("--idle-exit", type=float,
                     help="stop after this many seconds without events, once one was processed")
    run.set_defaults(func=cmd_run)

    srv = sub.add_parser(
        "serve", help="the lookup server: one image in over HTTP, one verdict out",
        description="Serve POST /v1/lookup (an image as multipart field 'image', raw bytes or "
        "JSON {bucket, key}) -> the stream's Verdict, POST /v1/images, GET/DELETE "
        "/v1/images/{id}, /healthz, /readyz, /metrics, OpenAPI at /docs, from a read replica "
        "of the index (latest snapshot + the index-updates feed; its adds and deletions are "
        "published to the feed). Bearer tokens: DUPSTREAM_SERVE__TOKENS. Settings as for run.")
    srv.add_argument("--config", help="YAML settings file (env DUPSTREAM_* overrides it)")
    srv.add_argument("--host", help="address to listen on (default DUPSTREAM_SERVE__HOST)")
    srv.add_argument("--port", type=int, help="port (default DUPSTREAM_SERVE__PORT, 8080)")
    srv.add_argument("--create-topics", action="store_true",
                     help="create the index-updates topic if missing")
    srv.add_argument("--partitions", type=int, default=3, help="partitions for --create-topics")
    srv.add_argument("--access-log", action="store_true",
                     help="log every request line (never the Authorization header)")
    srv.set_defaults(func=cmd_serve)

    scan = sub.add_parser(
        "scan", help="the same pipeline over local files (no Kafka needed)",
        description="Judge local images in the given order (a directory contributes its images "
        "sorted by path), each against the ones before it. One JSON line per image: image_id "
        "(the path), verdict, match_id, probability, p_copy, evidence, model_version, timings_ms. "
        "Then the duplicate groups, whatever the file order: each with a suggested keeper (the "
        "least edited, largest, oldest file) and every other member's role and reason (summary "
        "on stdout, --groups JSON, --report HTML). Exit 1 when a file failed, 2 for a path "
        "that does not exist.")
    scan.add_argument("paths", nargs="+", help="image files and/or directories")
    scan.add_argument("--out", help="write JSON lines here (default: stdout)")
    scan.add_argument("--tenant", help="tenant to scope the scan to")
    scan.add_argument("--batch", type=_positive_int, default=16, help="images per model batch")
    scan.add_argument("--groups", metavar="FILE",
                      help="write the duplicate groups here (JSON: each group's suggested keeper "
                      "and every other member's role and reason; README, 'Photo folders')")
    scan.add_argument("--report", metavar="FILE.html",
                      help="write a self-contained HTML page: each group side by side with "
                      "thumbnails, roles, p_copy, reasons and changed regions; failed files")
    scan.add_argument("--index", metavar="DIR",
                      help="keep a persistent index in DIR (the service's snapshot format): "
                      "files already indexed with the same size and time are not read again, "
                      "new ones are judged against everything indexed before")
    scan.add_argument("--preference", default="balanced",
                      choices=["balanced", "precision", "recall"],
                      help="decision cut-off, as DUPSTREAM_POLICY__PREFERENCE for run")
    scan.add_argument("--domain", help="calibration domain (photos, digits, cctv), as "
                      "DUPSTREAM_POLICY__DOMAIN for run (default: the default model)")
    scan.add_argument("--max-pixels", type=_positive_int, default=50_000_000,
                      help="images with more pixels fail as image_bomb "
                      "(DUPSTREAM_IMAGE__MAX_PIXELS for run)")
    scan.add_argument("--allow-errors", action="store_true",
                      help="exit 0 even when some files fail (default: exit 1, INPUT_ERRORS)")
    scan.add_argument("-q", "--quiet", action="store_true",
                      help="no model-loading line, no progress bar")
    _add_model_args(scan)
    scan.set_defaults(func=cmd_scan)

    cmp_ = sub.add_parser(
        "compare", help="score image pairs: A B, or --pairs pairs.csv",
        description="Score pairs of images. 'compare A B' prints one JSON object; '--pairs' "
        "reads a CSV with header a,b and writes one JSON line per pair, in order. Each result "
        "has probability (calibrated P(B is a copy of A)), verdict, and every per-signal score.")
    cmp_.add_argument("images", nargs="*", metavar="IMAGE", help="two image paths A B")
    cmp_.add_argument("--pairs", help="CSV file with header a,b (image paths)")
    cmp_.add_argument("--out", help="write JSON lines here (default: stdout)")
    _add_model_args(cmp_)
    cmp_.set_defaults(func=cmd_compare)

    tr = sub.add_parser(
        "train", help="reproduce the shipped GCN, fusion alpha and calibration (CPU, minutes)",
        description="Build labelled pairs from the photos that ship in installed packages "
        "(photo, halves, collages; every edit), run the production features (SSCD, YOLOv3-tiny, "
        "object graph), train the 3-layer GCN (contrastive loss, Adam), grid-search alpha on "
        "validation pairs and refit the calibration. Writes gcn.safetensors, gcn.json (seed, "
        "data recipe, loss curve, sha256, test metrics) and calibration.json.")
    tr.add_argument("--out", help="output folder (default: the package's workers/assets)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--epochs", type=int, default=50)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--embedder", default="sscd", choices=["sscd", "sscd_distilled"])
    tr.add_argument("--threads", type=int, default=int(os.environ.get("DUPSTREAM_THREADS", 2)))
    tr.add_argument("--decision", action="store_true",
                    help="instead: the learned decision model (decision_model.json: generated "
                    "digit, photo and CCTV pairs, the engine's pair features, gradient-boosted "
                    "trees, calibration, cut-offs; the report goes to --report)")
    tr.add_argument("--report", default="results/decision",
                    help="--decision: report folder (decision_report.md/.json, reliability plot)")
    tr.add_argument("--resamples", type=int, default=500,
                    help="--decision: bootstrap resamples for the confidence intervals")
    tr.add_argument("--skew-pairs", type=int, default=60,
                    help="--decision: test pairs per set recomputed with the current code to "
                    "check the cached features for train/serve skew (0: skip)")
    tr.set_defaults(func=cmd_train)

    ix = sub.add_parser(
        "index", help="the shared index: snapshot | restore | stats | list | migrate",
        description="Operate on the index every replica shares (object storage + the "
        "index-updates topic; settings as for 'run'). snapshot: load the latest snapshot, "
        "replay the feed to its end, write a new snapshot (the snapshot-writer job). restore "
        "[--snapshot ID]: verify a snapshot (every blob's SHA-256, the manifest fingerprint, "
        "and that the configured embedder and weights wrote it) and make it the one replicas "
        "start from. stats [--replay]: load (and optionally replay) "
        "and print sizes, index kinds and replication figures. list: snapshots, newest first. "
        "migrate [--snapshot ID]: copy the embedded snapshot (latest, or ID) and its records "
        "into the Milvus collections of state.backend=milvus (re-runnable: present images "
        "are skipped).")
    ix.add_argument("action", choices=["snapshot", "restore", "stats", "list", "migrate"])
    ix.add_argument("--config", help="YAML settings file (env DUPSTREAM_* overrides it)")
    ix.add_argument("--snapshot", help="restore: the snapshot id to roll back to; migrate: "
                    "the snapshot to copy (default: the latest)")
    ix.add_argument("--replay", action="store_true", help="stats: also replay the feed")
    ix.add_argument("--timeout", type=float, default=300.0, help="feed catch-up limit (s)")
    ix.set_defaults(func=cmd_index)

    be = sub.add_parser(
        "bench", help="pipeline benchmark: images/s and per-stage p50/p99 (JSON + Markdown)",
        description="Run the pipeline over N real images (made from packaged photos) at several "
        "batch sizes in seven modes - hash fast path (byte-identical re-uploads), visual only, "
        "full semantic, the stream service's engine calls (the next batch extracted while one "
        "is judged), full semantic overlapped as `scan` runs it, CNN-only scan (also with "
        "the next batch decoded while one embeds) - each in its own process; print and write "
        "images/s, per-stage latency p50/p99, peak RSS and GPU memory. --e2e adds "
        "event->verdict latency through a real local broker at a fixed offered load.")
    be.add_argument("--images", type=int, default=64)
    be.add_argument("--batches", default="1,8,32")
    be.add_argument("--modes", default="hash_fast_path,visual_only,full_semantic,stream_ahead,"
                    "full_overlap,cnn_only,cnn_only_overlap")
    be.add_argument("--threads", type=int, default=2)
    be.add_argument("--workload", choices=["crops", "mixed"], default="crops",
                    help="crops: crops/edits of the packaged photos; mixed: an upload stream of "
                    "distinct photos, then edited copies of a fifth of them")
    be.add_argument("--rounds", type=int, default=1,
                    help="run the modes this many times, alternated; the report gives each "
                    "ratio's median over the rounds (and each round's)")
    be.add_argument("--e2e", action="store_true")
    be.add_argument("--e2e-rate", type=float, default=2.0)
    be.add_argument("--out", default="results/pipeline")
    be.set_defaults(func=cmd_bench)

    ev = sub.add_parser(
        "eval", help="the paper's evaluation: data sets, baselines, ablations, statistics",
        description="Build the evaluation data sets from real images shipped in packages "
        "(MNIST-Duplicate, COCO-style, CCTV-style; seeded, split 60/20/20 by source), score "
        "every pair once, evaluate ours against pHash, PDQ, SIFT+BoVW, the visual embedding "
        "and the ablations (alpha and cut-offs on validation, metrics on test with bootstrap "
        "CIs, McNemar), fit the calibration and cut-offs, measure scalability, and write "
        "report.md + report.html with plots and a gallery under the results folder. "
        "--pairs evaluates your own labelled pairs (CSV header a,b,label).")
    ev.add_argument("--dataset", choices=["mnist", "coco", "cctv", "all"],
                    help="which data set (default: all, or none when only --pairs is given)")
    ev.add_argument("--pairs", help="CSV of labelled pairs: a,b,label (1 = b copies a)")
    ev.add_argument("--out", help="report folder (default: results/eval-<time>)")
    ev.add_argument("--seed", type=int, default=0, help="data-set seed (default 0)")
    ev.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    ev.add_argument("--quick", action="store_true", help="tiny data sets (a smoke run)")
    ev.add_argument("--ship", action="store_true",
                    help="install the fitted calibration.json and decision.json in "
                    "workers/assets (what compare, scan and the stream use)")
    ev.add_argument("--scalability", type=int, nargs="*", default=[50, 100, 200],
                    metavar="N", help="image counts for the scalability runs (none: skip)")
    ev.add_argument("--detectors", help="detector swap backends, comma-separated "
                    "(default: every one available)")
    ev.add_argument("--before", help="a saved per_kind.json (an earlier run's): the report shows "
                    "the shipped product's recall / FPR per pair kind before and now")
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_model_args(ev)
    ev.set_defaults(func=cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    logging.getLogger("torch").setLevel(logging.WARNING)
    # librdkafka's own lines (routed through logging): warnings and errors, all with -v
    logging.getLogger("dupstream.librdkafka").setLevel(
        logging.DEBUG if args.verbose else logging.WARNING)
    logging.getLogger("dupstream.librdkafka.probe").setLevel(
        logging.DEBUG if args.verbose else logging.CRITICAL)
    from dupstream.app.startup import Interrupted

    if not args.verbose:
        _quiet_warnings()
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, like other tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe
    except DupstreamError as exc:
        print(f"dupstream: {exc.reason}: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except Interrupted as exc:  # SIGINT/SIGTERM before the service ran: a clean stop
        print(f"dupstream: {exc}", file=sys.stderr)
        # nothing is pending before the service runs (no producer, no writes), and tearing
        # down a half-loaded torch takes the interpreter seconds: leave now
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(ExitCode.OK)
    finally:
        if args.command == "run":  # the process ends now: the interpreter's last garbage
            gc.freeze()  # collections over the loaded models would take seconds


if __name__ == "__main__":
    raise SystemExit(main())
