"""Training: the config, the assembly of a run, devices and layouts, the loop,
checkpoints, the workdir, preemption, metric writing and monitoring. Imports
core/, data/ and utils; never read/ or a command."""
