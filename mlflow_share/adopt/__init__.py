"""Adopting an existing MLflow installation: owner teams for the experiments and registered
models made before mlflow-share, and MLflow basic-auth's users and permissions, through a
reviewable plan (``owners``, ``basic_auth``; the ``mlflow-share adopt`` commands in ``cli``)."""
