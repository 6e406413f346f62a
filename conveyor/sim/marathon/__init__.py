"""A Marathon (and DC/OS) API simulator whose tasks are real containers on the Docker Engine.

Run it::

    python -m conveyor.sim.marathon --listen 127.0.0.1:PORT [--dcos]
        [--service-account NAME=PUBLIC_KEY_FILE ...] [--ports 31000-31999] [--agents N]
        [--agent-cpus 4] [--agent-mem 8192] [--name integration]
        [--basic-auth USER:PASSWORD_FILE] [--docker-config CONFIG_JSON] [--state-dir DIR]

It prints ``listening on http://HOST:PORT`` when ready; SIGTERM/SIGINT removes its
containers (labels ``conveyor.sim=marathon`` and ``conveyor.sim.instance=<name>``), and
stale ones of the same name are removed at start. With ``--state-dir`` it keeps apps,
versions, tasks and deployments in DIR/marathon-state.json instead, leaves its tasks
running when it stops and adopts them when it starts again (see ``persist``).
In-process (tests)::

    with MarathonSim(Settings(name="t", ports=range(a, b)), docker_client) as sim: sim.url

Where things really are
    Tasks report ``host`` = the simulated agent (``<name>-agent-<i>.example``) and
    ``ports`` = host ports from ``--ports``; every container uses host networking, so the
    reachable address is always 127.0.0.1 (also given as the task's ``ipAddresses``).
    Tasks get PORT0..n, PORT, PORTS, PORT_<NAME>, HOST (the agent hostname, as on Mesos:
    bind to 127.0.0.1, not to $HOST), MARATHON_APP_ID, MARATHON_APP_VERSION, MESOS_TASK_ID.

Marathon behaviour followed (RAML in shared/reference (beside the checkout)/marathon-api)
    PUT /v2/apps/{id}: 201 created / 200 updated, ``{"deploymentId","version"}`` and header
    ``Marathon-Deployment-Id``; partialUpdate defaults to true; ``{"version": V}`` alone
    redeploys stored version V. 409 with ``deployments`` when the app is locked (``?force=true``
    cancels the holder). 400 "Invalid JSON" for syntax/type errors, 422 "Object is not valid"
    with ``details`` (Marathon's ``/healthChecks(0)/path`` notation). Unknown fields are kept.
    Rolling upgrades honour minimumHealthCapacity/maximumOverCapacity; a deployment stays in
    /v2/deployments until all new tasks are healthy (it never fails: failed tasks are replaced
    with backoffSeconds * backoffFactor^n, capped by maxLaunchDelaySeconds).
    DELETE /v2/deployments/{id}: rollback deployment (200) or, with force=true, cancel (202).
    Ids follow PathId (pathid.py): outer and repeated slashes do not matter, relative ids
    resolve against their group, bad segments and reserved last words are 422 on /id.
    Groups (/v2/groups[/{id}], groups_api.py): nested, dependencies (steps by dependency
    layer, a cycle is 422), scaleBy, versions and revert ({"version": V}), dryRun; every
    change is one plan (plan.py) over all the apps it touches. PUT/PATCH /v2/apps takes a
    list. POST /v2/apps/{id}/restart; DELETE /v2/apps/{id}/tasks[/{taskId}][?scale&host],
    POST /v2/tasks/delete: killed tasks are replaced unless scaled away.
    Like Marathon, ``tasksHealthy`` is 0 for apps without health checks (count tasksRunning);
    for deployments such tasks count as ready once running.
    Health checks HTTP/MESOS_HTTP (GET 127.0.0.1:port/path, 2xx-3xx healthy) and TCP/MESOS_TCP
    are really probed; COMMAND/HTTPS are refused with 422 (the simulator cannot probe them).
    delaySeconds holds only MESOS_* checks (Marathon documents it as not implemented for
    its own); HTTP/TCP kill after more than maxConsecutiveFailures (0: never), MESOS_* at
    that count. readinessChecks (HTTP, by portName) hold a deployment's new tasks until
    ready; /v2/deployments shows readinessCheckResults.
    cpus/mem are the container's CPU quota and memory limit (floors 0.01 cpus, 32 MB, as
    Mesos). Each agent offers its own slice of --ports; a task no agent can take waits in
    /v2/queue (Marathon's QueueApp with the offer funnel) until room frees.
    Only host networking is supported. Each cmd runs as ``/bin/sh -c cmd`` (entrypoint
    replaced), args are passed to the image's entrypoint. Images are used when present or
    pulled (from a registry on 127.0.0.1) with ``--docker-config``/DOCKER_CONFIG credentials;
    a failed pull is TASK_FAILED with lastTaskFailure.

DC/OS (--dcos)
    POST /acs/api/v1/auth/login with ``{"uid","token"}`` (RS256 JWT with uid and exp, signed by
    the account's private key) answers ``{"token"}``; every other route needs
    ``Authorization: token=<token>`` (401 + ``WWW-Authenticate: acsjwt`` and IAM's error shape
    otherwise) except /dcos-metadata/dcos-version.json. Marathon is under /service/marathon/;
    also /system/health/v1/units, /mesos/master/slaves, /metadata (CLUSTER_ID), the public
    /acs/api/v1/auth/providers and Mesos-DNS's master lookup (/mesos_dns/v1/hosts/master.mesos),
    which is what Mesosphere's DC/OS CLI needs for `dcos cluster setup` and `dcos marathon`.

Fault switches (never authenticated): POST /_sim/faults with JSON, answer 201 ``{"id",...}``
    {"kind": "health", "app": "/a", "count": N?, "duration": S?, "cause": "..."}
        health probes of the app fail (all tasks, or the first N probed), for S seconds or
        until cleared: tasks turn unhealthy and are killed and replaced after grace.
    {"kind": "unavailable", "duration": S?, "status": 503}
        every API route (not /_sim) answers that status.
    {"kind": "hang_deployment", "app": "/a", "duration": S?}
        deployments of the app never complete (tasks still start).
    {"kind": "lock", "app": "/a", "duration": S}
        a fake deployment locks the app for S seconds (answer carries its deploymentId).
    {"kind": "unit_unhealthy", "unit": "dcos-marathon.service", "duration": S?}
        that unit reports health 1 in /system/health/v1/units.
    GET /_sim/faults lists them, DELETE /_sim/faults[?kind=K] clears them, GET /_sim/state
    dumps apps, tasks (with container ids and health), deployments and agents.
"""

from conveyor.sim.marathon.server import MarathonSim, Settings, main

__all__ = ["MarathonSim", "Settings", "main"]
