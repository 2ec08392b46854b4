"""The code MLflow stores with a model logged by `fraudseq.mlflow.log_model` and runs when it
loads it ("models from code": the pyfunc wrapper is built here, never unpickled). Not meant
to be imported: it registers the wrapper with MLflow."""

import mlflow

from fraudseq.mlflow import FraudseqPyfunc

mlflow.models.set_model(FraudseqPyfunc())
