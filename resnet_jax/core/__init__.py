"""The model, the pure train and eval steps, augmentation, the optimizer and
the learning-rate schedules. Imports nothing else of the project."""
