"""mlflow-share sharing packages: log a model that validates the first time, fix a rejected
package, withdraw one made by mistake, publish, consume, revoke.

Run from the repository root, in the virtualenv where mlflow-share, mlflow-share-client,
scikit-learn and skl2onnx are installed:

    python examples/sharing_package.py

Like `walkthrough.py` (whose server and helpers it reuses), it starts its own
`mlflow-share server` on a temporary home and a free loopback port, checks every outcome and
stops the server at the end. Nothing is downloaded.

    a. admin:  teams `fraud` and `payments`; alice (maintainer of fraud), bob (engineer of
               payments), a token each.
    b. alice:  train a scikit-learn classifier, convert it to ONNX, and log it with
               `mlflow_share_client.log_shareable` (input example + inputs AND outputs in the
               signature), registered as `fraud-classifier`.
    c. alice:  `mlflow-share share create` without a description: rejected, with the reason;
               `mlflow-share share edit ID --description ...`: validated.
    d. bob:    his package list does not show it: it is not published to payments yet.
    e. alice:  a second package made by mistake: `mlflow-share share withdraw ID --yes`.
    f. alice:  `mlflow-share share publish ID`; bob sees it, loads version 1 and predicts.
    g. alice:  `mlflow-share share revoke ID --yes`; bob is refused again.

It exits with status 0 when every step behaved as expected, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from walkthrough import (
    CREDENTIAL_VARS,
    Server,
    WalkthroughFailure,
    act_as,
    check,
    cli,
    expect_error,
    say,
    setup_org,
    share_cli,
    step,
)

MODEL_NAME = "fraud-classifier"


def cli_status(*args: str) -> subprocess.CompletedProcess[str]:
    """`mlflow-share ARGS` that may fail (a rejected package exits 1): the whole result."""
    result = subprocess.run([*share_cli(), *args], capture_output=True, text=True,
                            env=dict(os.environ), timeout=120, stdin=subprocess.DEVNULL)
    say(f"   $ mlflow-share {' '.join(args)}   (exit {result.returncode})")
    return result


def alice_logs_a_shareable_model(tokens: dict[str, str]) -> None:
    import mlflow
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    from mlflow_share_client import log_shareable

    step("b. alice trains a classifier and logs it with log_shareable")
    act_as(token=tokens["alice"])
    mlflow.set_experiment("fraud-detection")
    rng = np.random.default_rng(7)
    features = rng.normal(size=(400, 4)).astype(np.float32)
    labels = (features @ np.array([1.5, -2.0, 0.5, 0.0]) > 0).astype(np.int64)
    model = LogisticRegression().fit(features, labels)
    # Tensor outputs (no ZipMap): validation compares them with the signature.
    onnx_model = to_onnx(model, features[:1], options={"zipmap": False})
    with mlflow.start_run(run_name="logreg-onnx"):
        mlflow.log_metric("train_accuracy", float(model.score(features, labels)))
        info = log_shareable(onnx_model, name="model", input_example=features[:5],
                             registered_model_name=MODEL_NAME)
    outputs = [o["name"] for o in info.signature.outputs.to_dict()]
    check(str(info.registered_model_version) == "1", "log_shareable did not register version 1")
    check(outputs == ["label", "probabilities"], f"unexpected signature outputs {outputs}")
    say(f"   registered {MODEL_NAME!r} version 1; signature outputs {outputs}")


def alice_fixes_a_rejected_package() -> str:
    step("c. alice packages version 1 for payments, forgets the description, then edits it")
    created = cli_status("share", "create", MODEL_NAME, "--version", "1",
                         "--team", "payments:execute", "--team", "payments:read",
                         "--semver", "1.0.0")
    check(created.returncode == 1 and "[rejected]" in created.stdout,
          f"expected a rejected package:\n{created.stdout}{created.stderr}")
    package_id = created.stdout.strip().splitlines()[-1]
    reason = next(line.strip() for line in created.stdout.splitlines()
                  if "description" in line and "needs" in line)
    say(f"   package {package_id}: rejected: {reason}")
    fixed = cli("share", "edit", package_id, "--description", "Scores card payments for fraud",
                "--intended-use", "payment screening")
    check("[validated]" in fixed and "validation: passed" in fixed,
          f"the edited package did not validate:\n{fixed}")
    say(f"   package {package_id}: validated after the edit")
    return package_id


def bob_lists(tokens: dict[str, str]) -> list[str]:
    act_as(token=tokens["bob"])
    return [p["id"] for p in json.loads(cli("share", "list", "--json"))]


def alice_withdraws_a_mistake() -> None:
    step("e. alice withdraws a second package she made by mistake")
    out = cli("share", "create", MODEL_NAME, "--version", "1", "--team", "payments:write",
              "--description", "Oops: write was not meant")
    mistake = out.strip().splitlines()[-1]
    cli("share", "withdraw", mistake, "--yes")
    gone = cli_status("share", "show", mistake)
    check(gone.returncode == 1 and "RESOURCE_DOES_NOT_EXIST" in gone.stderr,
          f"the withdrawn package is still there: {gone.stdout}{gone.stderr}")
    say(f"   package {mistake}: withdrawn (its record stays in the audit log)")


def bob_uses_version_1(tokens: dict[str, str]) -> None:
    import mlflow
    import numpy as np

    act_as(token=tokens["bob"])
    loaded = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/1")
    rows = np.array([[2.0, -1.0, 0.0, 0.0], [-2.0, 1.0, 0.0, 0.0]], dtype=np.float32)
    predicted = loaded.predict(rows)
    labels = [int(v) for v in np.asarray(predicted["label"]).ravel()]
    check(labels == [1, 0], f"unexpected predictions {labels}")
    say(f"   bob loaded models:/{MODEL_NAME}/1 and predicted {labels}")


def main() -> int:
    import logging

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    for name in (*CREDENTIAL_VARS, "MLFLOW_TRACKING_URI"):
        os.environ.pop(name, None)

    workdir = Path(tempfile.mkdtemp(prefix="mlflow-share-packages-"))
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
        alice_logs_a_shareable_model(tokens)
        package_id = alice_fixes_a_rejected_package()
        step("d. bob (payments) does not see the package: it is not published yet")
        check(package_id not in bob_lists(tokens), "bob sees an unpublished package")
        say("   bob's `share list` does not show it")
        act_as(token=tokens["alice"])
        alice_withdraws_a_mistake()
        step("f. alice publishes the package; bob sees it and uses version 1")
        cli("share", "publish", package_id)
        check(package_id in bob_lists(tokens), "bob does not see the published package")
        bob_uses_version_1(tokens)
        step("g. alice revokes the package; bob is refused again")
        act_as(token=tokens["alice"])
        cli("share", "revoke", package_id, "--yes")
        from mlflow import MlflowClient

        act_as(token=tokens["bob"])
        expect_error("PERMISSION_DENIED", f"bob get_registered_model({MODEL_NAME!r})",
                     lambda: MlflowClient().get_registered_model(MODEL_NAME))
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
    say("\nAll steps behaved as expected: the package validated after one edit, a mistaken "
        "one was withdrawn, the published one was used and revoked.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
