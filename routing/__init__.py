"""The routing rules as plain code, shared by the router actor and the host's direct path:
the route table (weights, pinned versions, pending tasks and deadlines), the request and
stage metrics, and the task-history record. Nothing here is an actor or sends a message."""
