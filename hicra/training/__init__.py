"""`hicra-train`: the CLI (`cli`: command-line checks and --help, nothing heavy imported), what it runs (`run`), the
LightningModule (`module`), prompt data (`data`), DDP/FSDP helpers (`distributed`), crash-safe checkpoints
(`checkpointing`), what a resume may continue (`resume`), one process per run (`run_lock`), stopping on SIGTERM and
SIGUSR1 (`preemption`), completion callbacks (`callbacks`), per-step hierarchy diagnostics (`hierarchy_diagnostics`)
and the closing summary (`summary`)."""
