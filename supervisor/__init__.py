"""The Supervisor actor and the plain policies it carries out (restart, health, children, config)."""
import runtime  # noqa: F401 - loopback binding and logging in every actor process
