"""The actor shells and the plain classes they call."""
import runtime  # noqa: F401 - loopback binding and logging in spawned actor processes
