"""Reading what training wrote: a workdir or a release loaded for inference,
the one evaluation path, the release format, metrics and pictures. Never
imports a command or the training loop."""
