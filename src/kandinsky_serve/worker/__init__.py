"""Workers: one process per device, each leasing batches of jobs and running them on the engine."""
