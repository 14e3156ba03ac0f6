"""What the tests share: the interoperability vectors, Redis, real processes, sending, workers, privacy checks."""
