"""Agent pools, their tokens and agents; the agent protocol's registration side."""
