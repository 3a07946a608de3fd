"""mlflow-share walk-through: share one registered model from team `fraud` with team `payments`.

Run from the repository root, in the virtualenv where mlflow-share is installed:

    python examples/walkthrough.py

The script is self-contained. It starts its own `mlflow-share server` on the embedded default
(SQLite and artifacts in a temporary folder, a free loopback port), plays the story below with
the stock MLflow client and the `mlflow-share` CLI, checks every outcome, and stops the server
at the end, also when something goes wrong. Nothing is downloaded.

    a. admin:  create teams `fraud` and `payments`, users alice (maintainer of fraud) and bob
               (engineer of payments), and an API token for each.
    b. alice:  train a small scikit-learn model, log it and register it as `fraud-classifier`,
               alias `champion`. The model is owned by `fraud`, alice's only team.
    c. bob:    cannot see `fraud-classifier` (PERMISSION_DENIED) nor find it in searches.
    d. alice:  `mlflow-share grant payments read --model fraud-classifier`.
    e. bob:    can now read the model, find it, load `models:/fraud-classifier@champion` and
               predict; but cannot change it (read-only grant).
    f. alice:  `mlflow-share revoke ...`; bob is refused again.

It exits with status 0 when every step behaved as expected, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODEL_NAME = "fraud-classifier"
EXPERIMENT_NAME = "fraud-detection"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
CREDENTIAL_VARS = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


class WalkthroughFailure(Exception):
    """An expected outcome did not happen."""


def check(condition: bool, message: str) -> None:
    """Like ``assert``, but survives ``python -O``."""
    if not condition:
        raise WalkthroughFailure(message)


def say(text: str) -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say(f"\n== {title}")


# -- the server --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def share_cli() -> list[str]:
    """The `mlflow-share` console script next to this Python, else the one on PATH."""
    here = Path(sys.executable).parent / "mlflow-share"
    if here.exists():
        return [str(here)]
    found = shutil.which("mlflow-share")
    if found is None:
        raise WalkthroughFailure("`mlflow-share` is not installed: see the top-level README.")
    return [found]


class Server:
    """`mlflow-share server` on a temporary home, in its own process group."""

    def __init__(self, home: Path, admin_password: str) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home.parent / "server.log"
        env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
        env.pop("MLFLOW_TRACKING_URI", None)
        env["MLFLOW_SHARE_ADMIN_PASSWORD"] = admin_password
        env.pop("MLFLOW_SHARE_ADMIN_USERNAME", None)  # the admin is "admin"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*share_cli(), "server", "--home", str(home), "--port", str(self.port),
             "--workers", "1"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the workers are stopped with it
        )

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise WalkthroughFailure(
                    f"The server exited with status {self.process.returncode} before it was "
                    f"ready.\n{self.log_tail()}")
            try:
                with NO_PROXY.open(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise WalkthroughFailure(f"The server was not healthy after {timeout:.0f} s.\n"
                                 f"{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "--- server log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._log.close()


# -- acting as someone -------------------------------------------------------------------
def act_as(*, token: str | None = None, username: str | None = None,
           password: str | None = None) -> None:
    """Set the credentials the MLflow client and the mlflow-share CLI read from the environment."""
    for name in CREDENTIAL_VARS:
        os.environ.pop(name, None)
    if token is not None:
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    if username is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = username
    if password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password


def cli(*args: str, stdin: str | None = None) -> str:
    """Run `mlflow-share ARGS` with the current credentials; return its standard output."""
    result = subprocess.run([*share_cli(), *args], input=stdin, capture_output=True, text=True,
                            env=dict(os.environ), timeout=120)
    shown = " ".join(a for a in args)
    if result.returncode != 0:
        raise WalkthroughFailure(f"`mlflow-share {shown}` failed ({result.returncode}):\n"
                                 f"{result.stdout}{result.stderr}")
    out = result.stdout.strip()
    if args[:2] != ("token", "create"):  # never print a token
        say(f"   $ mlflow-share {shown}\n     {out.splitlines()[-1] if out else ''}")
    else:
        say(f"   $ mlflow-share {shown}\n     (token printed on the last line; kept secret)")
    return result.stdout


def expect_error(code: str, what: str, call: Callable[[], Any]) -> None:
    """``call`` must fail with an MlflowException whose error_code is ``code``."""
    from mlflow.exceptions import MlflowException

    try:
        call()
    except MlflowException as exc:
        check(exc.error_code == code,
              f"{what}: expected {code}, got {exc.error_code}: {exc.message}")
        say(f"   {what}: refused with {exc.error_code} (as expected)")
        return
    raise WalkthroughFailure(f"{what}: expected {code}, but it succeeded")


# -- the story ---------------------------------------------------------------------------
def setup_org(admin_password: str) -> dict[str, str]:
    step("a. admin creates the teams, the users and their API tokens")
    act_as(username="admin", password=admin_password)
    me = json.loads(cli("whoami", "--json"))[0]
    check(me["user"] == "admin" and me["is_admin"], f"whoami as admin answered {me!r}")
    cli("team", "create", "fraud")
    cli("team", "create", "payments")
    tokens = {}
    for user, team, role in (("alice", "fraud", "maintainer"), ("bob", "payments", "engineer")):
        cli("user", "create", user, "--password-stdin", stdin=secrets.token_urlsafe(18) + "\n")
        cli("team", "add-member", team, user, "--role", role)
        tokens[user] = cli("token", "create", user).strip().splitlines()[-1]
        check(len(tokens[user]) >= 20, f"the token of {user} looks wrong")
    say("   alice is maintainer of fraud, bob is engineer of payments; each has a token.")
    return tokens


def alice_trains_and_registers(tokens: dict[str, str]) -> None:
    import mlflow
    import numpy as np
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    step("b. alice (token only) trains, logs and registers a model with the stock MLflow client")
    act_as(token=tokens["alice"])
    experiment = mlflow.set_experiment(EXPERIMENT_NAME)
    say(f"   experiment {EXPERIMENT_NAME!r} created (id {experiment.experiment_id}); "
        "its owner team is fraud, alice's only team")

    rng = np.random.default_rng(7)
    features = rng.normal(size=(400, 4))
    labels = (features @ np.array([1.5, -2.0, 0.5, 0.0]) + rng.normal(scale=0.3, size=400) > 0)
    labels = labels.astype(int)
    params = {"C": 1.0, "max_iter": 200}
    model = LogisticRegression(**params).fit(features, labels)
    accuracy = float(model.score(features, labels))

    with mlflow.start_run(run_name="logreg-baseline") as run:
        mlflow.log_params(params)
        mlflow.log_metric("train_accuracy", accuracy)
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=MODEL_NAME,
            signature=infer_signature(features, model.predict(features)),
            input_example=features[:2],
        )
    version = info.registered_model_version
    check(version is not None, "log_model did not register a model version")
    say(f"   run {run.info.run_id[:8]}: train_accuracy={accuracy:.3f}; "
        f"registered {MODEL_NAME!r} version {version}")

    client = MlflowClient()
    client.set_registered_model_alias(MODEL_NAME, "champion", str(version))
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    check(str(champion.version) == str(version), "the alias champion does not point at the model")
    say(f"   alias 'champion' -> version {champion.version}")


def bob_is_refused(tokens: dict[str, str], when: str) -> None:
    from mlflow import MlflowClient

    act_as(token=tokens["bob"])
    client = MlflowClient()
    expect_error("PERMISSION_DENIED", f"bob get_registered_model({MODEL_NAME!r}) {when}",
                 lambda: client.get_registered_model(MODEL_NAME))
    names = [m.name for m in client.search_registered_models()]
    check(MODEL_NAME not in names, f"bob's model search shows {MODEL_NAME!r} {when}: {names}")
    experiments = [e.name for e in client.search_experiments()]
    check(EXPERIMENT_NAME not in experiments,
          f"bob's experiment search shows {EXPERIMENT_NAME!r} {when}: {experiments}")
    say(f"   bob's searches show none of fraud's models or experiments (models seen: {names})")


def bob_cannot_load(tokens: dict[str, str], files: str) -> None:
    import mlflow

    act_as(token=tokens["bob"])
    expect_error("PERMISSION_DENIED", f"bob load_model('models:/{MODEL_NAME}@champion')",
                 lambda: mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion"))
    # The artifact location bob learned while he had access no longer serves him either.
    with tempfile.TemporaryDirectory() as scratch:
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=files, dst_path=scratch)
        except Exception as exc:  # the artifact proxy answers 403: requests' HTTPError
            check("403" in str(exc), f"downloading {files} failed, but not with 403: {exc}")
            say("   bob downloading the model files he saw before: refused with 403 (as expected)")
        else:
            raise WalkthroughFailure(f"bob could still download {files} after the revoke")


def alice_changes_grant(tokens: dict[str, str], command: str) -> None:
    act_as(token=tokens["alice"])
    out = cli(command, "payments", "read", "--model", MODEL_NAME)
    expected = "Granted" if command == "grant" else "Revoked"
    check(out.startswith(expected), f"`mlflow-share {command}` answered {out!r}")


def bob_uses_the_model(tokens: dict[str, str]) -> str:
    import mlflow
    import numpy as np
    from mlflow import MlflowClient

    step("e. bob can now read, find and load the model, but not change it")
    act_as(token=tokens["bob"])
    client = MlflowClient()
    registered = client.get_registered_model(MODEL_NAME)
    check(registered.name == MODEL_NAME, "get_registered_model answered another model")
    say(f"   get_registered_model: {registered.name}, aliases {registered.aliases}")
    names = [m.name for m in client.search_registered_models()]
    check(MODEL_NAME in names, f"bob's model search does not show {MODEL_NAME!r}: {names}")
    say(f"   search_registered_models now shows {names}")

    loaded = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    rows = np.array([[2.0, -1.0, 0.0, 0.0], [-2.0, 1.0, 0.0, 0.0], [0.1, 0.1, 0.1, 0.1]])
    predictions = [int(p) for p in np.asarray(loaded.predict(rows)).ravel()]
    check(len(predictions) == 3, f"expected 3 predictions, got {predictions}")
    check(predictions[:2] == [1, 0], f"unexpected predictions {predictions}")
    say(f"   models:/{MODEL_NAME}@champion loaded; predictions on 3 rows: {predictions}")
    files = client.get_model_version_download_uri(MODEL_NAME, registered.aliases["champion"])
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=files, dst_path=scratch))
        check((local / "MLmodel").is_file(), f"no MLmodel file in {files}")
    say(f"   the model files at {files} download for bob too")

    expect_error("PERMISSION_DENIED", "bob set_registered_model_tag (read-only grant)",
                 lambda: client.set_registered_model_tag(MODEL_NAME, "reviewed-by", "bob"))
    return files


def main() -> int:
    import logging

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    for name in (*CREDENTIAL_VARS, "MLFLOW_TRACKING_URI"):
        os.environ.pop(name, None)

    workdir = Path(tempfile.mkdtemp(prefix="mlflow-share-walkthrough-"))
    admin_password = secrets.token_urlsafe(18)
    server: Server | None = None
    try:
        say(f"Starting `mlflow-share server` on the embedded default in {workdir} ...")
        server = Server(workdir / "home", admin_password)
        server.wait_healthy()
        say(f"Server ready at {server.url}")
        os.environ["MLFLOW_TRACKING_URI"] = server.url
        import mlflow

        mlflow.set_tracking_uri(server.url)

        tokens = setup_org(admin_password)
        alice_trains_and_registers(tokens)
        step("c. bob (payments) cannot see fraud's model")
        bob_is_refused(tokens, "before the grant")
        step("d. alice, maintainer of fraud, grants payments read access to the model")
        alice_changes_grant(tokens, "grant")
        files = bob_uses_the_model(tokens)
        step("f. alice revokes the grant; bob is refused again")
        alice_changes_grant(tokens, "revoke")
        bob_is_refused(tokens, "after the revoke")
        bob_cannot_load(tokens, files)
    except WalkthroughFailure as exc:
        say(f"\nFAILED: {exc}")
        if server is not None:
            say(server.log_tail())
        return 1
    except Exception as exc:  # an unexpected error is a failure too, with the server's view
        say(f"\nFAILED with an unexpected {type(exc).__name__}: {exc}")
        if server is not None:
            say(server.log_tail())
        raise
    finally:
        act_as()
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    say("\nAll steps behaved as expected: the model was shared read-only, then unshared.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
