"""MLflow as the record of every run: store helpers, run metadata and locks (`store`), and the Lightning logger that
continues a run exactly on resume (`resumable_logger`)."""
