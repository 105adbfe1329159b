"""Layer 4: `MLFlowTracker` (fastai v1's `fastai.callbacks.mlflow`): a run's parameters, its losses
and metrics per epoch, and the notebook that ran it, recorded in an MLflow tracking server.
Needs the `mlflow` package (`pip install 'fastbase[mlflow]'`), imported when the fit starts.
"""
from __future__ import annotations

import math
import os

from ..callback import Callback, Order
from ..core import FastbaseError, is_main_process

__all__ = ["MLFlowTracker"]


def _mlflow_client(uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise FastbaseError("MLFlowTracker needs the mlflow package: pip install 'fastbase[mlflow]' "
                            "(or pip install mlflow).") from e
    return MlflowClient(uri)


class MLFlowTracker(Callback):
    """At the start of each fit: the experiment `exp_name` (created if new), a new run, and `params`
    logged to it. After each epoch: the Recorder's row (train_loss, valid_loss, each metric) with the
    epoch as step. At the end: `nb_path` (a file, e.g. the notebook) as an artifact, and the run
    closed ('FAILED' when the fit raised). `client`: an `MlflowClient` of your own (default: one on
    `uri`). `learn` is accepted for fastai v1's signature. Under torchrun only rank 0 writes."""
    order = Order.CSV_LOGGER + 5  # after_epoch: reads the row the Recorder has just closed

    def __init__(self, learn=None, exp_name: str = "fastbase", params: dict | None = None, nb_path=None,
                 uri: str = "http://localhost:5000", client=None):
        self.exp_name, self.params, self.nb_path, self.uri = exp_name, dict(params or {}), nb_path, uri
        self.client, self.run = client, None

    def before_fit(self):
        if not is_main_process():
            return
        if self.client is None:
            self.client = _mlflow_client(self.uri)
        exp = self.client.get_experiment_by_name(self.exp_name)
        exp_id = self.client.create_experiment(self.exp_name) if exp is None else exp.experiment_id
        self.run = self.client.create_run(experiment_id=exp_id).info.run_id
        for key, value in self.params.items():
            self.client.log_param(self.run, key, value)

    def after_epoch(self):
        recorder = self.learn.recorder
        if self.run is None or not recorder.values:
            return
        for name, value in zip(recorder.value_names, recorder.values[-1]):
            if not math.isnan(value):
                self.client.log_metric(self.run, name, float(value), step=self.learn.epoch)

    def after_fit(self):
        if self.run is None:
            return
        if self.nb_path is not None and os.path.isfile(self.nb_path):
            self.client.log_artifact(self.run, str(self.nb_path))
        self.client.set_terminated(self.run)
        self.run = None

    def cleanup_fit(self):
        if self.run is not None:  # the fit raised before after_fit
            self.client.set_terminated(self.run, status="FAILED")
            self.run = None
