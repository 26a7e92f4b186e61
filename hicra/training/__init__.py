"""`hicra-train`: the CLI (`cli`: command-line checks and --help, nothing heavy imported), `train(cfg)` (`run`) with
its refusals before anything loads (`preflight`) and the run context it builds (`run_context`), the LightningModule
(`module`), prompt data (`data`), DDP/FSDP helpers (`distributed`, `fail_together`), crash-safe checkpoints
(`checkpointing`, `find_checkpoint`, `run_checkpoints`), what a resume may continue (`resume`), one process per run
(`run_lock`), stopping on SIGTERM, SIGUSR1 and SIGUSR2 (`preemption`), completion callbacks (`callbacks`), per-step
hierarchy diagnostics (`hierarchy_diagnostics`) and the closing summary (`summary`). docs/layout.md lists every
module."""
