"""mlflow-share's client side: verified downloads of registered model versions.

    from mlflow_share_client import download_verified
    path = download_verified("models:/churn@champion")      # raises IntegrityError if tampered
    model = mlflow.pyfunc.load_model(path)

Depends on ``mlflow-skinny`` only and uses the stock client's tracking URI and credentials.
"""

from mlflow_share_client.verify import IntegrityError, download_verified, fetch_manifest

__all__ = ["IntegrityError", "download_verified", "fetch_manifest"]
