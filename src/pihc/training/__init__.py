"""Training harness: configs, run directories, the trainer (imports the core, never the reverse)."""
