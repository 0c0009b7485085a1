"""``precision serve``, ``demo`` and ``keys``."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SERVICE_TARGET = "serving.service:PrecisionService"
DEMO_ROLES = ("notification", "campaign", "admin")
SOURCES = ("generated", "movielens")
READY_TIMEOUT_SECONDS = 240.0

keys_app = typer.Typer(help="Create and list the service's API keys.")


def register_serving_commands(app: typer.Typer) -> None:
    """Add the serving commands to the root command line."""
    app.command("serve")(serve)
    app.command("demo")(demo)
    app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def create_key_command(
    role: Annotated[
        str, typer.Option(help="notification, campaign or admin.", show_default=False)
    ],
) -> None:
    """Create an API key for a role and print it once (only its hash is kept)."""
    from features.errors import PrecisionError
    from features.settings import Settings
    from serving.auth import create_key
    from serving.settings import ServingSettings

    path = ServingSettings().keys_path(Settings())
    try:
        key = create_key(path, role)
    except PrecisionError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    typer.echo(key)
    typer.echo(
        f"stored its SHA-256 hash in {path}; the key is not shown again", err=True
    )


@keys_app.command("list")
def list_keys_command() -> None:
    """List stored keys: id, role and creation time (never the key)."""
    from features.settings import Settings
    from serving.auth import KeyStore
    from serving.settings import ServingSettings

    store = KeyStore.load(ServingSettings().keys_path(Settings()))
    for record in store.records:
        typer.echo(f"{record.key_id}  {record.role:<12}  {record.created_at}")


def service_environment() -> dict[str, str]:
    """The environment of the service process: ours, with tracking turned off."""
    env = dict(os.environ)
    env["BENTOML_DO_NOT_TRACK"] = "True"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p
    )
    return env


def serve_command(host: str, port: int) -> list[str]:
    """The ``bentoml serve`` command line of the service."""
    return [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        SERVICE_TARGET,
        "--host",
        host,
        "--port",
        str(port),
        "--working-dir",
        str(PROJECT_ROOT),
    ]


def wait_until_ready(
    process: subprocess.Popen[bytes], base_url: str, timeout: float
) -> bool:
    """Poll ``/readyz`` until it answers 200, the process dies or time runs out."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def serve(
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1.")
    ] = 3000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Serve the champion models with BentoML until interrupted."""
    _run_service(host, port, keys={})


def _run_service(host: str, port: int, keys: dict[str, str]) -> None:
    base_url = f"http://{host}:{port}"
    typer.echo(f"starting the BentoML service on {base_url} ...")
    # Its own process group, so stopping it reaches BentoML's workers as well.
    process = subprocess.Popen(
        serve_command(host, port), env=service_environment(), start_new_session=True
    )
    # A service manager stops us with SIGTERM: stop the server too, as on Ctrl-C.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if not wait_until_ready(process, base_url, READY_TIMEOUT_SECONDS):
            typer.echo(
                f"the service did not become ready; check the log above and "
                f"{base_url}/info",
                err=True,
            )
        else:
            _print_examples(base_url, keys)
        process.wait()
    except KeyboardInterrupt:
        typer.echo("stopping the service ...")
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Interrupt the server's process group, then kill what is left of it.

    BentoML gets 15 s to stop; its workers are in the same group, so none is left
    holding the port even when BentoML itself had to be killed.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _interrupt(signum: int, frame: object) -> None:
    """Turn a termination signal into the interrupt the service loop handles."""
    raise KeyboardInterrupt


def _print_examples(base_url: str, keys: dict[str, str]) -> None:
    from features.settings import Settings

    notify = keys.get("notification", "$NOTIFICATION_KEY")
    campaign = keys.get("campaign", "$CAMPAIGN_KEY")
    admin = keys.get("admin", "$ADMIN_KEY")
    cards = _example_cards(Settings())
    recommend = {"cards": cards, "k": 5, "channel": "line"}
    segment = {"filters": {"consent_marketing": True}, "top_offers": 5}
    examples = [
        ("offers for card holders", "POST", "/recommend", notify, recommend),
        ("need propensities", "POST", "/needs", notify, {"cards": cards[:2]}),
        ("segment preview", "POST", "/segments/preview", campaign, segment),
        ("reload models and scores", "POST", "/admin/reload", admin, None),
        ("model versions", "GET", "/info", None, None),
    ]
    typer.echo(f"\nthe service is ready at {base_url}")
    typer.echo(f"segment page for campaign managers: {base_url}/segments")
    typer.echo(f"API documentation: {base_url}/api/docs")
    typer.echo(f"health: {base_url}/livez  {base_url}/readyz  {base_url}/metrics\n")
    for title, method, path, key, body in examples:
        parts = ["curl", "-s", "-X", method, f"{base_url}{path}"]
        if key:
            parts += ["-H", f"X-API-Key: {key}"]
        if body is not None:
            parts += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        typer.echo(f"# {title}\n{shlex.join(parts)}\n")
    typer.echo("press Ctrl-C to stop")


def _example_cards(settings: object) -> list[str]:
    """Three card numbers of the warehouse and one malformed value."""
    from features.warehouse import Warehouse

    warehouse = Warehouse(settings.warehouse_dir)  # type: ignore[attr-defined]
    try:
        numbers = warehouse.read_table("card_holders", ["card_number"])["card_number"]
        cards = numbers.head(3).astype(str).tolist()
    except Exception:  # an example only; never fail the demo for it
        cards = ["0000000001"]
    return [*cards, "12-34"]


def _step(title: str, args: list[str]) -> None:
    """Run one ``precision`` command in this process, with a visible heading."""
    from precision_cli import app

    typer.secho(f"\n==> {title}: precision {' '.join(args)}", bold=True)
    started = time.perf_counter()
    command = typer.main.get_command(app)
    try:
        command.main(args=args, prog_name="precision", standalone_mode=False)
    except SystemExit as done:
        if done.code not in (0, None):
            typer.secho(f"step failed: precision {' '.join(args)}", fg="red", err=True)
            code = done.code if isinstance(done.code, int) else 1
            raise typer.Exit(code) from done
    typer.echo(f"    done in {time.perf_counter() - started:.1f} s")


def demo(
    source: Annotated[
        str, typer.Option(help="generated (synthetic warehouse) or movielens.")
    ] = "generated",
    cards: Annotated[
        int | None, typer.Option(help="Card holders to generate (default size).")
    ] = None,
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1.")
    ] = 3000,
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Stop after batch scoring.")
    ] = False,
) -> None:
    """Build everything from scratch and serve it: the product's main job.

    Creates the pseudonym secret, generates (or imports) the warehouse, builds the
    features, trains, promotes and scores, creates one API key per role, then serves
    on 127.0.0.1 and prints ready-to-paste examples.
    """
    from features.logs import configure_logging

    if source not in SOURCES:
        typer.echo(
            f"--source: expected one of {list(SOURCES)}, got {source!r}", err=True
        )
        raise typer.Exit(2)
    configure_logging()
    started = time.perf_counter()
    for title, args in demo_steps(source, cards):
        _step(title, args)
    keys = _demo_keys()
    typer.secho(
        f"\nbuilt in {time.perf_counter() - started:.0f} s; demo API keys (shown "
        "once; only their hashes are stored):",
        bold=True,
    )
    for role, key in keys.items():
        typer.echo(f"  {role:<13} {key}")
    if no_serve:
        return
    _run_service("127.0.0.1", port, keys)


def demo_steps(source: str, cards: int | None) -> list[tuple[str, list[str]]]:
    """The ``precision`` commands the demo runs, in order."""
    if source == "movielens":
        data = ["warehouse", "import", "movielens"]
    else:
        data = ["warehouse", "generate"]
        if cards is not None:
            data += ["--cards", str(cards)]
    return [
        ("pseudonym secret", ["warehouse", "init-secret"]),
        ("warehouse", data),
        ("feature store", ["features", "build"]),
        ("training", ["train"]),
        ("promotion", ["promote"]),
        ("batch scores", ["score"]),
    ]


def _demo_keys() -> dict[str, str]:
    from features.settings import Settings
    from serving.auth import create_key
    from serving.settings import ServingSettings

    path = ServingSettings().keys_path(Settings())
    return {role: create_key(path, role) for role in DEMO_ROLES}
