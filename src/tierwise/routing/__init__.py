"""Routers: decide which model a task goes to, before the first call. They never call."""
