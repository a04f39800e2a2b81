"""ctd training: datasets, teachers, student, losses, methods, trainer, evaluation (needs torch)."""
