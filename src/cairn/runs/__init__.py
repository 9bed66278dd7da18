"""Runs, their plan and apply phases, the job queue, job tokens and logs."""
