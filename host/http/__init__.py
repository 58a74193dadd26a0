"""The daemon's HTTP face: tasks, services, health, context and events as JSON and
Server-Sent Events, a status page and an OpenAPI schema, served by the launcher.

``checks`` is imported before the actor system starts and stays light; the app
(FastAPI on uvicorn) is imported only when HTTP is served.
"""
