"""Plan/execute workflows: a planner writes a checked plan, cheap capable executors carry out
its steps, step acceptance runs as gates, repeated failures trigger a re-plan from the
artifacts; decomposition runs independent sub-tasks concurrently; the variant harness
compares strong and cheap models at planning and at implementation."""
