"""How a search starts its own Ray, or joins a cluster.

A local Ray (no ``--address``) is a new instance of its own (never a cluster that happens to
run on the machine), started so that:

* it listens on the loopback interface only. Measured with Ray 2.60: a plain local
  ``ray.init()`` takes the machine's outward address as node IP; its gRPC servers (GCS,
  raylet with the object manager, driver and worker core workers) then listen on every
  interface (``::``) and the runtime-env agent on that address. With node IP ``127.0.0.1``
  they all listen on loopback only (the dashboard is off; its minimal agent listens on
  nothing). Nothing on the network has any business with a search on this machine.
* trial workers import the installed emotune, not the driver's working directory. Ray puts
  the driver's cwd on every worker's ``sys.path`` unless the job has a runtime-env
  ``working_dir``; a user's ``spaces/`` folder of YAMLs would then replace emotune's
  ``spaces`` package inside trials. The job gets an empty ``working_dir``, so workers start in
  (and import from) an empty folder. ``trainables.provenance`` checks the result in each trial.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import tempfile
from collections.abc import Iterator

import ray

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def start_ray(address: str | None) -> None:
    """Connects to ``address`` (or ``RAY_ADDRESS``), or starts a local Ray (see module doc)."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _connect(address)
    else:
        _start_local()


def _connect(address: str) -> None:
    try:
        ray.init(address=address, log_to_driver=False)
    except Exception as err:  # Ray raises several types here; only auth gets advice
        if "auth" not in str(err).lower() and "token" not in str(err).lower():
            raise
        raise ValueError(
            f"Ray at {address} refused the connection ({err}). The cluster uses token "
            "authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or "
            "RAY_AUTH_TOKEN_PATH, default ~/.ray/auth_token) to the cluster's token, or "
            "launch with `ray job submit` on the cluster."
        ) from err


def _start_local() -> None:
    # Ray zips and uploads the working_dir during init; workers get it from Ray's own store,
    # so the folder is not needed afterwards.
    with tempfile.TemporaryDirectory(prefix="emotune-ray-workdir-") as empty, _loopback_node():
        ray.init(
            # "local": always a new instance. Without it Ray joins whatever cluster its
            # "latest cluster" file names (another user's, or a dead one it then waits for).
            address="local",
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            _node_ip_address=LOOPBACK,
            runtime_env={"working_dir": empty},
        )
    node_ip = ray.util.get_node_ip_address()
    if not ipaddress.ip_address(node_ip).is_loopback:
        log.warning(
            "the local Ray took node IP %s instead of %s: its services may be reachable from "
            "the network (check this Ray version's binding options)",
            node_ip,
            LOOPBACK,
        )


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """Lets ``ray.init(_node_ip_address="127.0.0.1")`` keep the loopback address.

    Ray 2.60 swaps a loopback ``_node_ip_address`` for the machine's outward IP unless its
    ``ENABLE_RAY_CLUSTER`` constant is false (read once, at import, from
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``; false is its macOS/Windows default, where Ray stays on
    loopback). It is false only while this node starts: a later ``ray.init(address=...)`` in the
    same process is unaffected.
    """
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
