"""The ``rts`` command line (also ``python -m pipeline``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pandas as pd

from dashboard.auth import configured_token, file_secrets, is_loopback, secrets_files
from data_products.queue import JobQueue
from data_products.schema import MATCHES
from pipeline import __version__, console
from pipeline.config import ConfigError, load_config
from pipeline.detection import maskrcnn
from pipeline.detection.detect import EvidenceDetector
from pipeline.detection.evidence import MODEL_FILE, EvidenceModel
from pipeline.detection.training import train
from pipeline.evaluation.evaluate import compare_many, detectors_markdown, evaluate_products, evaluation_markdown
from pipeline.evaluation.families import (auto_detector, choose_l2, family_of, label_candidates, report_markdown,
                                          score_family, train_evidence)
from pipeline.evaluation.uncertainty import MODEL_FRACTIONS, STEP_SCALES, coverage, fit_sigma, sigma_table
from pipeline.orchestration.jobs import work
from pipeline.orchestration.plan import format_plan, make_plan, plan_json
from pipeline.orchestration.run import run
from pipeline.publish.crossref import publish_matches
from pipeline.publish.inventories import export_references, match_inventories, read_inventory
from pipeline.synth import SITES, generate_sample
from scenes.build import SITES as B_SITES, build


def _cmd_synth(args: argparse.Namespace) -> int:
    if args.family == "B":
        if args.strips is not None:
            raise ValueError("--strips is an option of family A (family B draws stacks of 6 to 40 strips itself)")
        sites = args.sites or list(B_SITES)
        print(f"rts synth: family B, {len(sites)} site(s) x {args.cells}x{args.cells} cells, seed {args.seed} -> {args.out}")
        manifest = build(args.out, seed=args.seed, sites=sites, cells=args.cells, workers=args.workers)
        print(f"rts synth: {manifest['n_strips']} strips, {manifest['n_slumps']} slump units, "
              f"{manifest['n_lookalikes']} look-alikes in {manifest['seconds']} s "
              f"(truth in {Path(args.out) / 'truth'}: evaluation only)")
        return 0

    sites = args.sites or list(SITES)
    print(f"rts synth: generating {len(sites)} site(s) x {args.cells}x{args.cells} cells, seed {args.seed} -> {args.out}")
    manifest = generate_sample(args.out, seed=args.seed, sites=sites, cells=args.cells, workers=args.workers,
                               n_strips=args.strips)
    print(f"rts synth: {manifest['n_strips']} strips, {manifest['n_slumps']} slumps, "
          f"{manifest['n_lookalikes']} look-alikes in {manifest['seconds']} s "
          f"(truth in {Path(args.out) / 'truth'}: evaluation only)")
    return 0


def _add_selection_args(p: argparse.ArgumentParser) -> None:
    """Strip selection flags (override the config's ``[selection]``; see pipeline/strips/index.py)."""
    g = p.add_argument_group("strip selection (any source; cloud, valid area, density and RMSE need PGC's index)")
    g.add_argument("--start-date", metavar="YYYY-MM-DD", help="first acquisition date kept")
    g.add_argument("--end-date", metavar="YYYY-MM-DD", help="last acquisition date kept")
    g.add_argument("--months", type=int, nargs="+", metavar="M", help="acquisition months kept, e.g. 6 7 8 9")
    g.add_argument("--sensors", nargs="+", metavar="S", help="sensors kept, e.g. WV01 WV02 WV03")
    g.add_argument("--in-track-only", action="store_true", default=None, help="drop cross-track pairs")
    g.add_argument("--max-cloud", type=float, metavar="FRACTION", help="largest cloud fraction (0-1) of a strip")
    g.add_argument("--min-valid", type=float, metavar="FRACTION", help="smallest valid-area fraction (0-1)")
    g.add_argument("--min-density", type=float, metavar="FRACTION", help="smallest matchtag density (0-1)")
    g.add_argument("--max-rmse", type=float, metavar="M", help="largest registration RMSE to altimetry (m)")
    g.add_argument("--asset-root", metavar="URL|DIR",
                   help="read a strip index's assets from this mirror instead of PGC's bucket (the item path is kept)")


def _config_with_selection(args: argparse.Namespace):
    cfg = load_config(args.config)
    flags = {"start_date": args.start_date, "end_date": args.end_date,
             "months": tuple(args.months) if args.months else None,
             "sensors": tuple(s.upper() for s in args.sensors) if args.sensors else None,
             "in_track_only": args.in_track_only, "max_cloud_fraction": args.max_cloud,
             "min_valid_fraction": args.min_valid, "min_matchtag_density": args.min_density,
             "max_rmse_m": args.max_rmse}
    try:
        sel = dataclasses.replace(cfg.selection, **{k: v for k, v in flags.items() if v is not None})
    except ValueError as exc:
        raise ConfigError(f"strip selection: {exc}") from None
    return dataclasses.replace(cfg, selection=sel)


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = _config_with_selection(args)
    summary = run(args.strips, args.out, cfg, tiles=args.tiles, bbox=args.bbox, climate=args.climate,
                  workers=args.workers, scheduler=args.scheduler, force=args.force, lock_timeout_s=args.lock_timeout,
                  asset_root=args.asset_root)
    # 0: every cell published; 3: some cells failed (named above and in run_summary.json),
    # the others published; 1: nothing could be processed; 2: a usage or input error
    if summary["failed"] == 0:
        return 0
    return 3 if summary["done"] > 0 or summary["skipped"] > 0 else 1


def _cmd_plan(args: argparse.Namespace) -> int:
    cfg = _config_with_selection(args)
    plan = make_plan(args.strips, args.out, cfg, tiles=args.tiles, bbox=args.bbox, force=args.force,
                     workers=args.workers, asset_root=args.asset_root)
    print(plan_json(plan) if args.json else format_plan(plan, max_rows=args.max_rows))
    return 0


def _cmd_jobs(args: argparse.Namespace) -> int:
    queue = JobQueue(args.products)
    if args.jobs_command == "submit":
        if not args.tiles and not args.bbox:
            raise ValueError("give --tiles ID ... or --bbox XMIN YMIN XMAX YMAX")
        job = queue.submit(tiles=args.tiles or None, bbox=tuple(args.bbox) if args.bbox else None, force=args.force,
                           submitted_by=args.by)
        print(f"job {job.id} {job.status}: {job.describe()}")
    elif args.jobs_command == "list":
        jobs = queue.list(status=args.status, limit=args.limit)
        print(f"{'id':>5}  {'status':<9} {'progress':>8}  {'created (UTC)':<19}  what / message")
        for j in jobs:
            print(f"{j.id:>5}  {j.status:<9} {j.progress:>8.0%}  {j.created_at[:19]:<19}  {j.describe()}  {j.message}")
        if not jobs:
            print("(no jobs)")
    elif args.jobs_command == "show":
        print(json.dumps(queue.get(args.id).to_dict(), indent=1))
    elif args.jobs_command == "cancel":
        job = queue.cancel(args.id)
        print(f"job {job.id} {job.status}{' (cancel requested)' if job.cancel_requested else ''}")
    elif args.jobs_command == "work":
        def _stop(signum, frame):  # SIGTERM (e.g. from rts dashboard): leave through the finally blocks
            raise SystemExit(143)

        signal.signal(signal.SIGTERM, _stop)
        cfg = load_config(args.config)
        work(args.products, args.strips, args.climate, cfg, workers=args.workers, scheduler=args.scheduler,
             once=args.once, poll_s=args.poll, progress=False)
    return 0


def _sample_pairs(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """``--sample`` folders paired in order with ``--products`` folders."""
    if len(args.sample) != len(args.products):
        raise ValueError("give as many --products folders as --sample folders (they are paired in order)")
    return list(zip(args.sample, args.products))


def _add_sample_products(parser: argparse.ArgumentParser, sample_help: str | None = None) -> None:
    parser.add_argument("--sample", required=True, type=Path, nargs="+", metavar="DIR", help=sample_help)
    parser.add_argument("--products", required=True, type=Path, nargs="+", metavar="PRODUCTS")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    pairs = _sample_pairs(args)
    cfg = load_config(args.config)
    if args.by_family:
        return _evaluate_by_family(args, cfg)
    text = "# Evaluation against the sample truth\n"
    for sample, products in pairs:
        result = evaluate_products(sample, products)
        text += (f"\nSample `{sample}`, products `{products}`: {result['n_truth']} true slumps, "
                 f"{result['n_lookalikes']} look-alikes. Matching is one-to-one by IoU.\n\n" + evaluation_markdown(result))
    detector = None
    if not args.rules_only:
        path = maskrcnn.weights_file(args.weights or cfg.detection.weights_path)
        if path is None:
            print("rts evaluate: no Mask R-CNN weights; comparing the rules and the naive baseline only", file=sys.stderr)
        else:
            detector = maskrcnn.Detector.load(path)
    cmp = compare_many(pairs, detector, cfg)
    text += ("\n## Detectors side by side\n\nMask R-CNN" + (f" (`{path}`)" if detector is not None else " (no weights)")
             + ", the rule-based criteria 1-3 (cleaned polygons, as published) and the naive baseline; "
             "look-alikes as slumps = detections matching a look-alike at IoU >= 0.3.\n\n" + detectors_markdown(cmp))
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


def _evaluate_by_family(args: argparse.Namespace, cfg) -> int:
    by: dict[str, list] = {}
    for s, p in _sample_pairs(args):
        by.setdefault(family_of(s), []).append((s, p))
    shipped = EvidenceModel.load(args.evidence or MODEL_FILE)
    text = ("# Evaluation per scene family\n\nFamily A = `pipeline.synth`, family B = the independent `scenes` "
            "package. *evidence (family left out)* is the evidence classifier trained without the family it is "
            "scored on: the honest estimate for data the pipeline has never seen. Matching is one-to-one by IoU; "
            "volumes, sigma coverage and temperature flags are those of the published inventory (its detector).\n")
    for fam, pairs in sorted(by.items()):
        dets = {"rules (criteria 1-3)": None}
        lofo = MODEL_FILE.with_name(f"evidence_without_{fam}.json")
        if lofo.exists():
            dets["evidence (family left out)"] = EvidenceDetector(EvidenceModel.load(lofo))
        dets["evidence (shipped, trained on all families)"] = EvidenceDetector(shipped)
        if not args.rules_only:
            path = maskrcnn.weights_file(args.weights or cfg.detection.weights_path)
            if path is not None:
                dets["Mask R-CNN"] = maskrcnn.Detector.load(path)
        rows = score_family([(Path(s), Path(p)) for s, p in pairs], dets, cfg)
        text += (f"\n## Family {fam}\n\nSamples: " + ", ".join(f"`{s}`" for s, _ in pairs) + "\n\n"
                 + report_markdown(rows))
    meta = shipped.meta or {}
    if meta.get("auto"):
        text += f"\n`detection.method = \"auto\"` uses **{meta['auto']}**: {meta.get('auto_reason', '')}\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


def _cmd_train_evidence(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    tables, pairs = {}, {}
    both = {Path(s).resolve() for s in args.validate} & {Path(s).resolve() for s in args.sample}
    if both:
        raise ValueError(f"validation samples must not be training samples: {', '.join(map(str, sorted(both)))}")
    for s, p in _sample_pairs(args):
        fam = family_of(s)
        tables.setdefault(fam, []).append(label_candidates(s, p))
        pairs.setdefault(fam, []).append((Path(s), Path(p)))
    out = Path(args.out) if args.out else MODEL_FILE
    l2 = args.l2
    if args.validate:
        validate: dict[str, list] = {}
        for s in args.validate:
            s = Path(s)
            products = s.parent / f"{s.name}{args.validate_suffix}"
            if not products.is_dir():
                raise FileNotFoundError(f"{products}: no products folder for validation sample {s} "
                                        f"(expected {s.name}{args.validate_suffix} beside it)")
            validate.setdefault(family_of(s), []).append(label_candidates(s, products))
        l2, scores = choose_l2(tables, validate, cfg.detection)
        print("rts train-evidence: penalty  candidate F1 on the validation family left out (mean): "
              + ", ".join(f"{k:g}: {v:.3f}" for k, v in scores.items()) + f" -> {l2:g}")
    elif l2 is None:
        l2 = cfg.detection.evidence_l2
    held = {}
    for fam in sorted(tables):
        others = [t for f, ts in tables.items() if f != fam for t in ts]
        if not others:
            continue
        m = train_evidence(others, l2=l2)
        m.meta["left_out"] = fam
        m.meta["l2"] = l2
        m.save(out.with_name(f"evidence_without_{fam}.json"))
        rows = score_family(pairs[fam], {"rules": None, "evidence": EvidenceDetector(m)}, cfg)
        held[fam] = {r["method"]: r.get("f1@0.5") for r in rows if r["method"] in ("rules", "evidence")}
        print(f"rts train-evidence: trained without family {fam}: F1@0.5 on {fam} evidence "
              f"{held[fam]['evidence']:.2f}, rules {held[fam]['rules']:.2f}")
    model = train_evidence([t for ts in tables.values() for t in ts], l2=l2)
    model.meta["l2"] = l2
    if held:
        model.meta["auto"] = auto_detector(held)
        model.meta["held_out_f1"] = held
        model.meta["auto_reason"] = ("F1 at IoU >= 0.5 on each family left out of training, averaged over the families: "
                                     + "; ".join(f"family {f}: evidence {h['evidence']:.2f}, rules {h['rules']:.2f}"
                                                 for f, h in held.items()))
    path = model.save(out)
    print(f"rts train-evidence: {model.meta['n_candidates']} candidates ({model.meta['n_slumps']} slumps) "
          f"from families {', '.join(model.meta['families'])} -> {path}; auto = {model.meta.get('auto', 'evidence')}")
    return 0


def _cmd_fit_sigma(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    tables: dict[str, list] = {}
    for s, p in _sample_pairs(args):
        t = sigma_table(s, p, cfg)
        print(f"rts fit-sigma: {s}: {len(t)} matched slumps")
        tables.setdefault(family_of(s), []).append(t)
    pooled = {f: pd.concat(ts, ignore_index=True) for f, ts in tables.items()}
    fitted, grid_table = fit_sigma(pooled, cfg.quantify)
    q = cfg.quantify
    print(f"{'family':<8}{'slumps':>8}{'now 1s / 2s':>16}{'fitted 1s / 2s':>18}")
    for f, t in sorted(pooled.items()):
        now, new = coverage(t, q), coverage(t, fitted)
        print(f"{f:<8}{len(t):>8}{now[0]:>9.0%} / {now[1]:.0%}{new[0]:>11.0%} / {new[1]:.0%}")
    if fitted.step_sigma_scale >= STEP_SCALES[-1] or fitted.model_sigma_fraction >= MODEL_FRACTIONS[-1]:
        print("rts fit-sigma: warning: the fit lies on the edge of the searched grid; the errors may need a "
              "term the model does not have")
    print("fitted (elevation_sigma_scale and outline_sigma_m held):\n[quantify]\n"
          f"step_sigma_scale = {fitted.step_sigma_scale}\nmodel_sigma_fraction = {fitted.model_sigma_fraction}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        grid_table.to_csv(args.out, index=False)
    return 0


def _cmd_crossref(args: argparse.Namespace) -> int:
    if (args.inventory is None) == (args.products is None):
        raise ValueError("give either --inventory FILE or --products PRODUCTS")
    if args.products is not None:
        s = publish_matches(args.products, args.reference, args.min_iou)
        print(f"rts crossref: {args.products} against {args.reference}: matched {s['matched']}, new {s['new']}, "
              f"missed {s['missed']} (IoU >= {args.min_iou}) -> {Path(args.products) / MATCHES}")
        return 0
    found = read_inventory(args.inventory)
    ref = read_inventory(args.reference)
    pairs, s = match_inventories(found, ref, min_iou=args.min_iou)
    iou = "" if s["reference_kind"] == "point" else f", mean IoU {s['mean_iou']:.3f}"
    print(f"rts crossref: {args.inventory} ({s['n_found']}) against {args.reference} ({s['n_reference']}, "
          f"{s['reference_kind']}s) at IoU >= {args.min_iou}: matched {s['matched']}, new {s['new']}, missed {s['missed']}"
          f"{iou}; precision {s['precision']:.3f}, recall {s['recall']:.3f}, F1 {s['f1']:.3f}")
    if args.out:
        matched_f, matched_r = set(pairs.found_index), set(pairs.reference_index)
        rows = ([{"status": "matched", "inventory_index": f, "reference_index": r, "iou": i}
                 for f, r, i in pairs.itertuples(index=False)]
                + [{"status": "new", "inventory_index": f, "reference_index": None, "iou": None}
                   for f in found.index if f not in matched_f]
                + [{"status": "missed", "inventory_index": None, "reference_index": r, "iou": None}
                   for r in ref.index if r not in matched_r])
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows, columns=["status", "inventory_index", "reference_index", "iou"]).to_csv(args.out, index=False)
        print(f"rts crossref: {len(rows)} rows -> {args.out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    args.out = args.out or maskrcnn.DEFAULT_WEIGHTS
    seeds = list(range(args.first_seed, args.first_seed + args.n_seeds))
    command = "rts train " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else "rts train"
    rec = train(args.cache, seeds, args.out, sites=args.sites, iterations=args.iterations, batch=args.batch,
                lr=args.lr, seed=args.seed, workers=args.workers, threads=args.threads, log_path=args.log,
                command=command)
    print(f"rts train: {rec['chips']} chips from seeds {seeds[0]}-{seeds[-1]}, {rec['iterations']} iterations in "
          f"{rec['train_seconds']} s -> {args.out} ({rec['weights_bytes'] / 1e6:.1f} MB)")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    # the ASGI entry: the app plus a route that streams product files from disk
    app = Path(str(resources.files("dashboard") / "asgi.py"))  # wherever the package is installed
    try:  # Streamlit serves the map layers from static/ beside the app (read-only installs inline them)
        (app.parent / "static" / "cache").mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    products = Path(args.products).resolve()
    # the environment or Streamlit's secrets files; a set but unusable token is an error (fail closed)
    token = configured_token(secrets=lambda: file_secrets(secrets_files()))
    if not is_loopback(args.address) and token is None and not args.no_token:
        raise ValueError(f"--address {args.address} is reachable from the network: set RTS_DASHBOARD_TOKEN "
                         "(at least 16 characters) so that only its holders can submit or cancel reprocessing, "
                         "or pass --no-token to allow anyone")
    # always headless: Streamlit's first-run e-mail prompt would otherwise wait on stdin
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port),
           "--server.address", args.address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "viewer", "--server.enableStaticServing", "true", "--", "--products",
           str(products)]
    host = "localhost" if is_loopback(args.address) else args.address
    if args.reference:  # published inventories as switchable map layers

        layers = export_references(args.reference, products)
        fresh = sum(1 for n in layers.values() if n >= 0)
        print(f"rts dashboard: {len(layers)} reference inventories from {args.reference} ({fresh} converted)",
              flush=True)
    worker = None
    if args.worker_strips:  # a queue worker beside the dashboard, stopped with it
        wcmd = [sys.executable, "-m", "pipeline", "jobs", "work", "--products", str(products), "--strips",
                str(args.worker_strips), "--poll", "2"]
        if args.worker_climate:
            wcmd += ["--climate", str(args.worker_climate)]
        if args.config:
            wcmd += ["--config", str(args.config)]
        worker = subprocess.Popen(wcmd)
        print(f"rts dashboard: queue worker started (pid {worker.pid}, strips {args.worker_strips})", flush=True)
    else:
        print("rts dashboard: no queue worker (give --worker-strips or RTS_STRIPS to start one beside the "
              "dashboard, or run `rts jobs work`)", flush=True)
    print(f"rts dashboard: http://{host}:{args.port}  (products: {products})", flush=True)
    app_proc = subprocess.Popen(cmd)
    return _wait_and_stop(app_proc, worker)


def _wait_and_stop(app_proc, worker) -> int:
    """Wait for the dashboard process; on its end, on Ctrl-C or on SIGTERM stop both it and the
    worker (SIGTERM, then SIGKILL after 10 s). The dashboard's exit code is returned."""
    def _term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _term)
    try:
        return app_proc.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        for proc in (app_proc, worker):
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in (app_proc, worker):
            if proc is not None:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rts",
        description="Retrogressive thaw slump volumetrics from ArcticDEM strip time series.",
    )
    p.add_argument("--version", action="version", version=f"rts {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="generate the synthetic ArcticDEM-like sample region (strips, STAC, climate, truth)",
                       description="Generate the sample region: ArcticDEM v4.1-like strips with bitmask and matchtag "
                                   "siblings, a static STAC catalog, ERA5- and CRU-like climate NetCDF and the truth "
                                   "(evaluation only) in DIR.")
    s.add_argument("--out", required=True, type=Path, metavar="DIR")
    s.add_argument("--seed", type=int, default=0, help="random seed; the sample is deterministic given it (default 0)")
    s.add_argument("--family", choices=["A", "B"], default="A",
                   help="scene family: A = pipeline.synth (default), B = the independent scenes package")
    s.add_argument("--sites", nargs="+", metavar="SITE",
                   help="sites to generate (default all: family A peel, banks, taymyr, yamal; "
                        "family B eureka, thomsen, tuktoyaktuk, batagay, kolyma)")
    s.add_argument("--cells", type=int, default=2, metavar="N", help="each site is an N x N block of 2 km cells (default 2)")
    s.add_argument("--workers", type=int, default=2, help="processes (one site each; default 2)")
    s.add_argument("--strips", type=int, metavar="N",
                   help="family A: every site a stack of exactly N strips (default 10-20; e.g. 46, the pan-Arctic "
                        "mean, for a deep-stack benchmark)")
    s.set_defaults(func=_cmd_synth)

    r = sub.add_parser("run", help="run the pipeline over every cell the strips cover",
                       description="Discover strips (a folder, searched recursively, or a STAC catalog/API), then "
                                   "coregister, detect change and write per-cell rasters to PRODUCTS/tiles/<cell>/.")
    r.add_argument("--strips", required=True, metavar="DIR|STAC|INDEX",
                   help="strip folder, catalog.json, STAC API URL, or PGC's strip index (.parquet/.shp/.gpkg/.gdb)")
    r.add_argument("--climate", metavar="FILE.nc", help="ERA5 or CRU TS temperature NetCDF")
    r.add_argument("--out", required=True, type=Path, metavar="PRODUCTS")
    r.add_argument("--tiles", nargs="+", metavar="ID", help="only these cells (e.g. 41_16_1_1_02_05)")
    r.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    r.add_argument("--config", type=Path, metavar="FILE.toml", help="override thresholds (see pipeline/config.py)")
    r.add_argument("--bbox", nargs=4, type=float, metavar=("XMIN", "YMIN", "XMAX", "YMAX"),
                   help="only cells meeting this box (EPSG:3413 m)")
    r.add_argument("--scheduler", metavar="ADDR", help="an existing Dask scheduler (default: $DASK_SCHEDULER_ADDRESS, "
                                                       "else a LocalCluster of --workers processes)")
    r.add_argument("--force", action="store_true", help="reprocess cells whose outputs exist")
    r.add_argument("--lock-timeout", type=float, default=3600.0, metavar="S",
                   help="wait this long for another run on the same PRODUCTS folder to finish (default 3600; "
                        "0: refuse at once)")
    _add_selection_args(r)
    r.set_defaults(func=_cmd_run)

    pl = sub.add_parser("plan", help="what `rts run` would do, without doing it: cells, strips, cost",
                        description="List the cells a run would process, their strips (by year, in the thaw season), "
                                    "the cells already up to date in PRODUCTS, and the estimated core-hours and memory "
                                    "(the per-cell cost model measured in docs/benchmarks.md). Reads only metadata.")
    pl.add_argument("--strips", required=True, metavar="DIR|STAC|INDEX", help="as for `rts run`")
    pl.add_argument("--out", type=Path, default=Path("products"), metavar="PRODUCTS",
                    help="products folder checked for up-to-date cells (default products; need not exist)")
    pl.add_argument("--tiles", nargs="+", metavar="ID")
    pl.add_argument("--bbox", nargs=4, type=float, metavar=("XMIN", "YMIN", "XMAX", "YMAX"), help="EPSG:3413 m")
    pl.add_argument("--workers", type=int, default=1, help="workers the wall time is estimated for (default 1)")
    pl.add_argument("--config", type=Path, metavar="FILE.toml")
    pl.add_argument("--force", action="store_true", help="plan as `rts run --force` (nothing up to date)")
    pl.add_argument("--json", action="store_true", help="the plan as JSON ({\"cells\": [...], \"totals\": {...}})")
    pl.add_argument("--max-rows", type=int, default=50, metavar="N", help="cells listed in the table (default 50)")
    _add_selection_args(pl)
    pl.set_defaults(func=_cmd_plan)

    j = sub.add_parser("jobs", help="the reprocessing queue in the products folder: submit, list, show, cancel, work",
                       description="A persistent job queue (PRODUCTS/jobs.sqlite). `submit` asks for cells to be "
                                   "reprocessed, `work` runs a worker that carries jobs out with the same code as "
                                   "`rts run`.")
    jsub = j.add_subparsers(dest="jobs_command", required=True)
    js = jsub.add_parser("submit", help="queue cells (or a box) for reprocessing")
    js.add_argument("--tiles", nargs="+", metavar="ID")
    js.add_argument("--bbox", nargs=4, type=float, metavar=("XMIN", "YMIN", "XMAX", "YMAX"), help="EPSG:3413 m")
    js.add_argument("--force", action="store_true", help="reprocess even when inputs are unchanged")
    js.add_argument("--by", default=os.environ.get("USER", ""), help="who asks (recorded)")
    jl = jsub.add_parser("list", help="recent jobs, newest first")
    jl.add_argument("--status", choices=["pending", "running", "done", "failed", "cancelled"])
    jl.add_argument("--limit", type=int, default=20)
    jsh = jsub.add_parser("show", help="one job in full (JSON), with its log tail")
    jsh.add_argument("id", type=int)
    jc = jsub.add_parser("cancel", help="cancel a pending job, or stop a running one after its cells in flight")
    jc.add_argument("id", type=int)
    jw = jsub.add_parser("work", help="run a worker: claim jobs and run them until stopped (or --once)")
    jw.add_argument("--strips", required=True, metavar="DIR|STAC")
    jw.add_argument("--climate", metavar="FILE.nc")
    jw.add_argument("--workers", type=int, default=1)
    jw.add_argument("--scheduler", metavar="ADDR")
    jw.add_argument("--config", type=Path, metavar="FILE.toml")
    jw.add_argument("--once", action="store_true", help="stop when no job is pending")
    jw.add_argument("--poll", type=float, default=5.0, metavar="S", help="seconds between polls of an empty queue")
    for sp in (js, jl, jsh, jc, jw):
        sp.add_argument("--products", default="products", metavar="PRODUCTS")
    j.set_defaults(func=_cmd_jobs)

    e = sub.add_parser("evaluate", help="score candidates and detectors (Mask R-CNN, rules, naive) against the truth",
                       description="Score a run's candidates per criteria level, and the Mask R-CNN beside the "
                                   "rule-based criteria 1-3 and the naive baseline, against the sample truth; several "
                                   "held-out samples are paired in order with their products folders.")
    _add_sample_products(e, "folder(s) made by rts synth")
    e.add_argument("--weights", metavar="FILE.pt", help="Mask R-CNN weights (default: the shipped pipeline/models/ file)")
    e.add_argument("--rules-only", action="store_true", help="do not run the Mask R-CNN")
    e.add_argument("--config", type=Path, metavar="FILE.toml", help="override thresholds (see pipeline/config.py)")
    e.add_argument("--out", type=Path, metavar="FILE.md", help="also write the tables here")
    e.add_argument("--by-family", action="store_true",
                   help="one report per scene family (A, B): rules, the evidence classifier with that family left "
                        "out of its training and as shipped, the Mask R-CNN, the naive baseline")
    e.add_argument("--evidence", type=Path, metavar="FILE.json",
                   help="evidence model (default pipeline/models/evidence.json)")
    e.set_defaults(func=_cmd_evaluate)

    te = sub.add_parser("train-evidence", help="fit the evidence classifier on runs over generated scene families",
                        description="Label each run's candidates by its sample's truth, fit the evidence classifier "
                                    "once per family left out (pipeline/models/evidence_without_<F>.json, scored on that "
                                    "family against the rules) and once on all families (the shipped model, which "
                                    "records which detector 'auto' should use).")
    _add_sample_products(te)
    te.add_argument("--out", type=Path, metavar="FILE.json", help="default pipeline/models/evidence.json")
    penalty = te.add_mutually_exclusive_group()
    penalty.add_argument("--l2", type=float, default=None,
                         help="ridge penalty on the standardised coefficients (default: detection.evidence_l2)")
    penalty.add_argument("--validate", nargs="+", metavar="DIR", default=[],
                         help="validation samples (not trained on, not held-out seeds): choose the penalty whose "
                              "models, trained without a family, classify that family's validation candidates best")
    te.add_argument("--validate-suffix", default="_prod", metavar="SUFFIX",
                    help="each validation sample's products folder is SAMPLE + SUFFIX beside it (default _prod)")
    te.add_argument("--config", type=Path, metavar="FILE.toml")
    te.set_defaults(func=_cmd_train_evidence)

    fs = sub.add_parser("fit-sigma", help="fit the volume uncertainty's scales on runs over fitting samples",
                        description="Recompute each matched slump's uncertainty terms from the products' rasters and "
                                    "fit quantify.step_sigma_scale and quantify.model_sigma_fraction so that, per scene "
                                    "family, the true volume lies within 1 sigma for 68 % and within 2 sigma for 95 % of "
                                    "the slumps. Prints the coverage now and fitted, and the TOML lines to use. Give "
                                    "fitting samples only, never the seeds an evaluation reports.")
    _add_sample_products(fs)
    fs.add_argument("--out", type=Path, metavar="FILE.csv", help="also write the coverage at every grid point")
    fs.add_argument("--config", type=Path, metavar="FILE.toml", help="the configuration the products were made with")
    fs.set_defaults(func=_cmd_fit_sigma)

    x = sub.add_parser("crossref", help="cross-reference an inventory against a published one (matched/new/missed)",
                       description="Match the polygons of an inventory (any format pipeline.publish.inventories reads: "
                                   "GeoParquet, shapefile, GeoPackage, GeoJSON, CSV with lat/lon) one-to-one against "
                                   "a reference inventory (polygons by IoU, points by containment).")
    x.add_argument("--inventory", type=Path, metavar="FILE", help="an inventory file")
    x.add_argument("--products", type=Path, metavar="PRODUCTS",
                   help="instead of --inventory: the products' inventory; matches are recorded in "
                        "PRODUCTS/inventory_matches.parquet for the dashboard's slump pages")
    x.add_argument("--reference", required=True, type=Path, metavar="FILE")
    x.add_argument("--min-iou", type=float, default=0.1, help="polygon pairs below this IoU do not match (default 0.1)")
    x.add_argument("--out", type=Path, metavar="FILE.csv", help="write every matched / new / missed row here")
    x.set_defaults(func=_cmd_crossref)

    t = sub.add_parser("train", help="train the Mask R-CNN slump detector on generated samples",
                       description="Generate samples for training seeds (>= 1000; seeds 0-99 are reserved for "
                                   "evaluation), run the DEM stage on them (cached under CACHE), cut chips around "
                                   "candidates and true slumps, train, and write the weights and a JSON log.")
    t.add_argument("--cache", type=Path, default=Path("runs/train_cache"), metavar="DIR",
                   help="generated samples and chips (default runs/train_cache)")
    t.add_argument("--first-seed", type=int, default=1000, help="first training seed (default 1000)")
    t.add_argument("--n-seeds", type=int, default=3, help="number of consecutive training seeds (default 3)")
    t.add_argument("--sites", nargs="+", default=["peel", "banks", "taymyr", "yamal"], metavar="SITE")
    t.add_argument("--iterations", type=int, default=600, help="default 600 (the shipped weights: defaults throughout)")
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0, help="torch / data-order / augmentation seed (default 0)")
    t.add_argument("--workers", type=int, default=2, help="processes for sample generation and the DEM stage")
    t.add_argument("--threads", type=int, default=1,
                   help="torch threads for training (default 1: on a shared 2-core machine a second thread mostly spins)")
    t.add_argument("--out", type=Path, metavar="FILE.pt",
                   help="weights file (default: the shipped pipeline/models/rts_maskrcnn.pt, checksum recorded)")
    t.add_argument("--log", type=Path, metavar="FILE.json", help="training log (default next to the weights)")
    t.set_defaults(func=_cmd_train)

    d = sub.add_parser("dashboard", help="start the web dashboard on a products folder")
    d.add_argument("--products", default="products", metavar="PRODUCTS")
    d.add_argument("--port", type=int, default=8501)
    d.add_argument("--headless", action="store_true", help="accepted for compatibility: the dashboard never opens a "
                                                            "browser or prompts; open the printed address")
    d.add_argument("--address", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only). Any other address needs "
                        "RTS_DASHBOARD_TOKEN or --no-token")
    d.add_argument("--no-token", action="store_true",
                   help="allow reprocessing without a token on a network address (anyone who can reach it)")
    d.add_argument("--worker-strips", default=os.environ.get("RTS_STRIPS") or None, metavar="DIR|STAC",
                   help="start a queue worker beside the dashboard that reprocesses from these strips "
                        "(default: the RTS_STRIPS environment variable; none without it)")
    d.add_argument("--worker-climate", default=os.environ.get("RTS_CLIMATE") or None, metavar="FILE",
                   help="the worker's climate file (default: RTS_CLIMATE)")
    d.add_argument("--config", type=Path, metavar="FILE.toml", help="the worker's configuration")
    d.add_argument("--reference", type=Path, metavar="DIR",
                   help="published inventories (any format rts crossref reads, searched recursively, e.g. "
                        "../shared/data/inventories) shown as switchable map layers")
    d.set_defaults(func=_cmd_dashboard)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("distributed", "tornado", "asyncio"):  # Dask's own chatter, unless -v
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    console.attach()  # progress and results on stdout, diagnostics on stderr
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:  # incl. QueueError, ConfigError
        print(f"rts {args.command}: error: {exc}", file=sys.stderr)
        return 2
