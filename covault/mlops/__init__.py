"""A job's result in the tools data scientists use: MLflow (:mod:`~covault.mlops.mlflow_log`),
Weights & Biases offline (:mod:`~covault.mlops.wandb_log`) and Hugging Face model folders
(:mod:`~covault.mlops.hf_export`). Each party logs only what the job revealed to it
(:mod:`~covault.mlops.content`). The tools are optional (``pip install 'covault[mlops]'``) and
imported only when used; see ``docs/mlops.md``."""
