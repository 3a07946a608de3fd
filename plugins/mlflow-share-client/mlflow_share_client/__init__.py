"""mlflow-share's client side: verified downloads of registered model versions, and ONNX
models logged so that a sharing package of them validates the first time.

    from mlflow_share_client import download_verified, log_shareable
    path = download_verified("models:/churn@champion")      # raises IntegrityError if tampered
    model = mlflow.pyfunc.load_model(path)

    info = log_shareable(onnx_model, name="model", input_example=X[:5],
                         registered_model_name="churn")      # signature inputs AND outputs

Depends on ``mlflow-skinny`` only and uses the stock client's tracking URI and credentials
(``log_shareable`` also needs numpy, onnx and onnxruntime: the ``onnx`` extra).
"""

from mlflow_share_client.shareable import ShareableModelError, log_shareable
from mlflow_share_client.verify import (
    IntegrityError,
    download_verified,
    fetch_manifest,
    fetch_signature,
    published_keys,
)

__all__ = ["IntegrityError", "ShareableModelError", "download_verified", "fetch_manifest",
           "fetch_signature", "published_keys",
           "log_shareable"]
