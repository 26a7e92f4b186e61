"""Configuration plumbing shared by the CLIs: one-line checks of the command line before anything heavy is imported
(`checks`), Hydra's `--help` text without Hydra's cost (`help`), and Hydra's `instantiate` with a user's bad value
reported in one line (`instantiate`)."""
