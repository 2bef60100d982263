"""The ``reelbot`` command: every process and operator command, with config built once here."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from reelbot.cli_io import USAGE_ERROR
from reelbot.cli_io import fail as _fail
from reelbot.config import Settings, load_settings
from reelbot.errors import ConfigError, ReelbotError, UserError
from reelbot.platforms import PLATFORMS

LONG_RUNNING = frozenset({"worker", "up", *PLATFORMS})


class _Parser(argparse.ArgumentParser):
    """argparse that ends with one clear line and exit status 2 on a usage error."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"reelbot: {message} (see reelbot {self.prog.split()[-1]} -h)\n")


def _number(text: str) -> float:
    """A ``--scale``: 2 or 1.5 (an int where whole, so upscale's Options take it)."""
    value = float(text)
    return int(value) if value.is_integer() else value


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="reelbot", description="Image and video generation from chat.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = sub.add_parser("generate", help="one local generation to a file, no Redis")
    gen.add_argument(
        "task",
        choices=[
            *("imagine", "remix", "video", "animate", "upscale", "restyle", "extend", "smooth"),
            *("inpaint", "zoom", "pan", "blend", "describe"),
        ],
    )
    gen.add_argument(
        "prompt",
        nargs="?",
        default="",
        help='the prompt with flags, e.g. "a red fox --ar 16:9 --seed 7" (none for upscale)',
    )
    gen.add_argument(
        "--image",
        type=Path,
        action="append",
        help="input image for remix, animate, upscale and the edits (blend: 2 to 4 times)",
    )
    gen.add_argument("--mask", type=Path, help="inpaint: white = the area to change")
    gen.add_argument(
        "--direction", choices=("left", "right", "up", "down"), help="pan: where the image grows"
    )
    gen.add_argument(
        "--video", type=Path, help="input clip for restyle, extend, smooth and upscale"
    )
    gen.add_argument("--last-image", type=Path, help="animate: the frame the video ends on")
    gen.add_argument(
        "--scale",
        type=_number,
        choices=(1.5, 2, 4),
        help="upscale: 2 or 4 times bigger; zoom: 1.5 or 2 (default 2)",
    )
    gen.add_argument("--creative", action="store_true", help="upscale: the image model adds detail")
    gen.add_argument("--out", type=Path, help="output file (.png/.jpg or .mp4; not for describe)")
    gen.add_argument("--out-each", type=Path, metavar="DIR", help="--n: also each image alone")
    gen.add_argument(
        "--max-bytes", type=int, default=10 * 1024 * 1024, help="byte budget of the output"
    )

    worker = sub.add_parser("worker", help="run a generation worker")
    worker.add_argument("--queue", action="append", help="queue name (repeatable); default both")

    processes = [worker]
    for name in PLATFORMS:
        processes.append(sub.add_parser(name, help=f"run the {name} adapter"))
    processes.append(sub.add_parser("up", help="run the whole service on this machine"))
    for process in processes:
        process.add_argument(
            "--metrics-port",
            type=int,
            metavar="PORT",
            help="serve Prometheus /metrics on PORT (overrides REELBOT_METRICS_PORT)",
        )

    health = sub.add_parser("health", help="exit 0 when Redis (and a worker) answers")
    health.add_argument(
        "--worker", action="store_true", help="also require a live worker heartbeat"
    )
    health.add_argument(
        "--queue", action="append", help="queues a worker must serve (repeatable); default both"
    )
    health.add_argument(
        "--this-host",
        action="store_true",
        help="only count workers on this host (a per-pod liveness probe)",
    )
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for Redis")

    jobs = sub.add_parser("jobs", help="list, show or cancel jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True, parser_class=_Parser)
    jobs_list = jobs_sub.add_parser("list", help="recent jobs")
    jobs_list.add_argument("--limit", type=int, default=20)
    jobs_show = jobs_sub.add_parser("show", help="one job")
    jobs_show.add_argument("job_id")
    jobs_cancel = jobs_sub.add_parser("cancel", help="cancel a job")
    jobs_cancel.add_argument("job_id")

    quota = sub.add_parser("quota", help="budgets per scope, usage and the audit log")
    quota_sub = quota.add_subparsers(dest="quota_command", required=True, parser_class=_Parser)
    quota_set = quota_sub.add_parser("set", help="set limits: daily, concurrent, cooldown, queue")
    quota_set.add_argument("scope", help="default, PLATFORM, PLATFORM:server:ID, …")
    quota_set.add_argument("values", nargs="+", metavar="KEY=VALUE")
    for name, text in (("show", "a scope's limits"), ("usage", "credits used today")):
        quota_sub.add_parser(name, help=text).add_argument("scope")
    quota_sub.add_parser("reset", help="forget today's use of a scope").add_argument("scope")
    quota_audit = quota_sub.add_parser("audit", help="recent changes, newest first")
    quota_audit.add_argument("--limit", type=int, default=20)

    policy = sub.add_parser("policy", help="a server's content policy (as /admin policy)")
    policy.add_argument("scope", help="PLATFORM:server:ID (discord:server:123) or PLATFORM:direct")
    policy.add_argument(
        "words", nargs="*", metavar="ACTION", help="show (default), mode, block, … (see help)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reelbot`` command."""
    args = _build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        return _fail(exc.message)
    if getattr(args, "metrics_port", None) is not None:
        if not 0 <= args.metrics_port <= 65535:
            return _fail(f"--metrics-port {args.metrics_port}: use 0-65535")
        settings = settings.model_copy(update={"metrics_port": args.metrics_port})
    if args.command in LONG_RUNNING:
        from reelbot import logs

        logs.setup(settings)
    handlers = {
        "health": _cmd_health,
        "generate": _cmd_generate,
        "worker": _cmd_worker,
        "jobs": _cmd_jobs,
        "quota": _cmd_quota,
        "policy": _cmd_policy,
        "up": _cmd_up,
        **dict.fromkeys(PLATFORMS, _cmd_platform),
    }
    handler = handlers.get(args.command)
    if handler is None:
        return _fail(f"{args.command}: this adapter is not part of this build yet")
    try:
        return handler(settings, args)
    except UserError as exc:
        return _fail(exc.user_message)
    except ConfigError as exc:
        return _fail(exc.message)
    except KeyboardInterrupt:
        return 130
    except ReelbotError as exc:
        return _fail(exc.message)


def _cmd_generate(settings: Settings, args: argparse.Namespace) -> int:
    """``reelbot generate``: one job, locally, with a progress bar."""
    from reelbot import cli_edit

    wrong = cli_edit.check(args)  # also turns --image back into one path for the others
    if wrong is not None:
        return _fail(wrong)
    if cli_edit.is_edit(args):
        return cli_edit.run(settings, args)
    from reelbot import cli_video

    if cli_video.is_video_edit(args):
        return cli_video.run(settings, args)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from reelbot.catalog import Task, load_catalog
    from reelbot.inputs import load_input_image
    from reelbot.jobs import Options, resolve

    task = Task(args.task)
    out: Path = args.out
    suffix = out.suffix.lower()
    if task.is_video and suffix != ".mp4":
        return _fail(f"--out {out}: /{task.value} makes a video; name the file .mp4")
    if not task.is_video and suffix not in (".png", ".jpg", ".jpeg"):
        return _fail(f"--out {out}: /{task.value} makes an image; name the file .png or .jpg")
    if args.out_each is not None and task.is_video:
        return _fail(f"--out-each is for images (a grid's, with --n), not /{task.value}")
    image = None
    if args.image is not None:
        if not task.needs_image:
            return _fail(f"--image only applies to remix, animate and upscale, not {task.value}")
        try:
            data = args.image.read_bytes()
        except OSError as exc:
            return _fail(f"--image {args.image}: {exc.strerror or exc}")
        image = load_input_image(data)
    catalog = load_catalog(settings.models, settings.styles_file)
    params = resolve(
        task,
        args.prompt,
        catalog,
        has_image=image is not None,
        default_seed=int(time.time_ns() % (2**32)),
        default_count=settings.default_count,
        explicit=Options(scale=args.scale, creative=args.creative or None),
        image_size=image.size if image is not None else None,
        upscale_max_side=settings.upscale_max_side,
    )

    from reelbot.generation.gpu import GpuOptions
    from reelbot.generation.grid import compose_grid
    from reelbot.generation.media import encode_image, encode_video
    from reelbot.generation.runner import Progress as StepProgress
    from reelbot.generation.runner import Runner

    console = Console(stderr=True)
    runner = Runner(
        catalog,
        data_dir=settings.data_dir,
        device=settings.device,
        gpu=GpuOptions.from_settings(settings),
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        bar_task = bar.add_task(f"{params.model}: loading", total=params.steps)

        def on_progress(p: StepProgress) -> None:
            bar.update(
                bar_task, completed=p.step, total=p.total, description=f"{params.model}: {p.stage}"
            )

        output = runner.generate(params, image, on_progress=on_progress)
        bar.update(bar_task, description=f"{params.model}: encoding")
        if task.is_video:
            media = encode_video(output.frames, fps=params.fps or 16, max_bytes=args.max_bytes)
        else:
            # --n 2..4: the images side by side (generation/grid.py), as the chats post them.
            shown = compose_grid(output.frames) if params.count > 1 else output.frames[0]
            media = encode_image(shown, max_bytes=args.max_bytes)
            if media.ext != suffix.lstrip(".").replace("jpeg", "jpg"):
                out = out.with_suffix(f".{media.ext}")
        bar.update(bar_task, description=f"{params.model}: done")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(media.data)
    console.print(f"[bold]{out}[/bold]  {media.width}x{media.height}", highlight=False)
    for i, frame in enumerate(output.frames if args.out_each else ()):
        alone = encode_image(frame, max_bytes=args.max_bytes)  # image i: --seed seed+i --n 1
        args.out_each.mkdir(parents=True, exist_ok=True)
        (path := args.out_each / f"{out.stem}-{i + 1}.{alone.ext}").write_bytes(alone.data)
        console.print(f"{path}  seed {params.seed + i}", highlight=False)
    if media.note:
        console.print(media.note, highlight=False)
    print(f"seed {params.seed}")
    print(f"{params.prompt} {params.summary()}")
    return 0


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    """``reelbot worker``: run an arq worker on one or more generation queues."""
    from reelbot.runtime.lifecycle import run_worker

    queues = _worker_queues(settings, args.queue)
    _serve_metrics(settings, gpu=True)
    run_worker(settings, queues)
    return 0


def _serve_metrics(settings: Settings, *, gpu: bool = False) -> None:
    """Start this process's /metrics endpoint when a port is set."""
    from reelbot import metrics
    from reelbot.store.readings import RedisCollector

    url, queues = settings.effective_redis_url, watched_queues(settings)
    metrics.serve(
        settings.metrics_port,
        host=settings.metrics_host,
        collectors={"redis": lambda: RedisCollector(url, queues)},
        gpu=gpu,
    )


def watched_queues(settings: Settings) -> list[str]:
    """Every queue whose depth the metrics report: generation, then each delivery queue."""
    from reelbot.store import keys

    return [
        settings.image_queue,
        settings.video_queue,
        *(keys.delivery_queue(p) for p in PLATFORMS),
    ]


def _cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    """``reelbot health``: 0 when Redis answers (and, with ``--worker``, a worker is live)."""
    import asyncio

    from reelbot.runtime.health import check

    problem = asyncio.run(
        check(
            settings.effective_redis_url,
            _worker_queues(settings, args.queue) if args.worker else [],
            this_host=args.this_host,
            timeout_s=args.timeout,
        )
    )
    if problem is None:
        return 0
    print(f"reelbot health: {problem}", file=sys.stderr)
    return 1


def _worker_queues(settings: Settings, names: Sequence[str] | None) -> list[str]:
    """Queue names from ``--queue`` (``image``, ``video`` or a full name); default both."""
    if not names:
        return [settings.image_queue, settings.video_queue]
    short = {"image": settings.image_queue, "video": settings.video_queue}
    return list(dict.fromkeys(short.get(name, name) for name in names))


def _cmd_platform(settings: Settings, args: argparse.Namespace) -> int:
    """``reelbot <platform>``: one platform's adapter and its delivery consumer."""
    import asyncio
    import importlib
    import inspect

    module_name, _, attr = PLATFORMS[args.command].command.partition(":")
    run = getattr(importlib.import_module(module_name), attr)
    _serve_metrics(settings)
    result = run(settings)
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    return int(result or 0)


def _cmd_jobs(settings: Settings, args: argparse.Namespace) -> int:
    """``reelbot jobs``: operator commands on the job records."""
    import asyncio

    from redis.exceptions import RedisError

    if args.jobs_command == "list" and args.limit < 1:
        return _fail("jobs list --limit must be at least 1")
    try:
        return asyncio.run(_jobs(settings, args))
    except (RedisError, OSError) as exc:
        print(
            f"reelbot: cannot reach Redis at {settings.effective_redis_url}: {exc}", file=sys.stderr
        )
        return 1


async def _jobs(settings: Settings, args: argparse.Namespace) -> int:
    """The ``jobs`` subcommands against Redis."""
    import asyncio

    from rich.console import Console

    from reelbot.catalog import load_catalog
    from reelbot.jobs import JobStatus
    from reelbot.queue.ops import job_detail, jobs_table
    from reelbot.queue.submit import JobQueue
    from reelbot.store.connection import connect

    console = Console()
    # An operator at a prompt wants a quick "cannot reach", not 15 s of retries.
    redis = connect(settings.effective_redis_url, retries=2)
    try:
        queue = JobQueue(redis, settings, load_catalog(settings.models, settings.styles_file))
        if args.jobs_command == "list":
            console.print(jobs_table(await queue.recent(limit=args.limit)))
        elif args.jobs_command == "show":
            record = await queue.get(args.job_id)
            console.print(job_detail(record, await queue.position(record)))
        else:
            outcome, record = await queue.cancel(args.job_id)
            if outcome == "stopping":
                # A running job stops at its next step; wait a little to report the end.
                for _ in range(100):
                    record = await queue.get(args.job_id)
                    if record.status != JobStatus.RUNNING and record.status != JobStatus.QUEUED:
                        break
                    await asyncio.sleep(0.1)
            said = {
                "removed": "cancelled (taken out of the queue)",
                "stopping": f"stopping at its next step; now {record.status.value}",
                "too_late": f"too late to cancel: {record.status.value}",
                "already_finished": f"already finished: {record.status.value}",
            }[outcome]
            console.print(f"job {record.id}: {said}")
    finally:
        await redis.aclose(close_connection_pool=True)
    return 0


def _cmd_quota(settings: Settings, args: argparse.Namespace) -> int:
    """``reelbot quota``: limits, usage and the audit log, for operators."""
    import asyncio

    from redis.exceptions import RedisError

    try:
        return asyncio.run(_quota(settings, args))
    except (RedisError, OSError) as exc:
        print(
            f"reelbot: cannot reach Redis at {settings.effective_redis_url}: {exc}", file=sys.stderr
        )
        return 1


async def _quota(settings: Settings, args: argparse.Namespace) -> int:
    """The ``quota`` subcommands against Redis."""
    import getpass

    from reelbot.governance import audit
    from reelbot.governance.admin import parse_assignments
    from reelbot.governance.quotas import QuotaBook, credits, parse_scope
    from reelbot.store.connection import connect

    scope = parse_scope(args.scope) if hasattr(args, "scope") else None
    values = parse_assignments(args.values) if args.quota_command == "set" else {}
    redis = connect(settings.effective_redis_url, retries=2)
    try:
        book = QuotaBook(redis, settings)
        actor = f"cli:{getpass.getuser()}"
        if args.quota_command == "set" and scope is not None:
            before, after = await book.change(scope, values, actor=actor, origin="cli")
            print(f"{scope}: {_limits(before)} -> {_limits(after)}")
        elif args.quota_command == "show" and scope is not None:
            own = await book.get(scope)
            print(f"{scope}: {_limits(own)}")
            print(f"built-in defaults: {_limits(book.defaults())}")
        elif args.quota_command == "usage" and scope is not None:
            found = await book.usage(scope)
            for name, used in found.items():
                print(f"{name}\t{credits(used)}")
            if not found:
                print(f"{scope}: nothing used today")
        elif args.quota_command == "reset" and scope is not None:
            used = await book.reset_usage(scope, actor=actor, origin="cli")
            print(f"{scope}: today's use ({credits(used)} credits) reset to 0")
        else:
            for entry in await audit.entries(redis, limit=max(1, args.limit)):
                print(entry.line())
    finally:
        await redis.aclose(close_connection_pool=True)
    return 0


def _cmd_policy(settings: Settings, args: argparse.Namespace) -> int:
    """``reelbot policy``: show or change a server's content policy, audited."""
    import asyncio

    from redis.exceptions import RedisError

    try:
        return asyncio.run(_policy(settings, args))
    except (RedisError, OSError) as exc:
        print(
            f"reelbot: cannot reach Redis at {settings.effective_redis_url}: {exc}", file=sys.stderr
        )
        return 1


async def _policy(settings: Settings, args: argparse.Namespace) -> int:
    """The ``policy`` command against Redis."""
    import getpass

    from reelbot.governance.policy import PolicyStore, apply
    from reelbot.store.connection import connect

    platform, _, rest = args.scope.partition(":")
    kind, _, ident = rest.partition(":")
    if not platform or not ((kind == "server" and ident) or (kind == "direct" and not ident)):
        return _fail(f"{args.scope!r}: use PLATFORM:server:ID or PLATFORM:direct")
    redis = connect(settings.effective_redis_url, retries=2)
    try:
        store = PolicyStore(redis, settings)
        actor = f"cli:{getpass.getuser()}"
        print(await apply(store, args.scope, list(args.words), actor=actor, origin="cli"))
    finally:
        await redis.aclose(close_connection_pool=True)
    return 0


def _limits(values: dict[str, float]) -> str:
    from reelbot.governance.quotas import credits

    return " ".join(f"{k}={credits(v)}" for k, v in sorted(values.items())) or "(inherits)"


def _cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    """``reelbot up``: the whole service on one machine."""
    from reelbot.runtime.lifecycle import run_up

    run_up(settings, _up_adapters(settings), metrics_queues=watched_queues(settings))
    return 0


def _up_adapters(settings: Settings) -> list[str]:
    """The adapters ``reelbot up`` runs, as ``"module:function"``: web, and those with a token.

    The hook for adapters: one line each, the setting that turns it on and an
    ``async def run_up(settings, stop)`` that serves until ``stop`` (an asyncio.Event) is set.
    """
    return [
        platform.up
        for platform in PLATFORMS.values()
        if platform.switch is None or getattr(settings, platform.switch) is not None
    ]


if __name__ == "__main__":
    sys.exit(main())
