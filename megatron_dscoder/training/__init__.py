"""The training loop's parts: model and optimizer build, the parallel step, the schedule, logging,
where a run starts (resume) and the --dry-run planner."""
