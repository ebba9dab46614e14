"""The persistent Dagster code server `oms up` starts: it serves the code location over gRPC on loopback,
and the workspace file written for the webserver and the daemon loads the location from it (no process
spawned per request). The repository's workspace.yaml stays the `dagster dev` one (tests/test_dagster_definitions.py)."""

from __future__ import annotations

import yaml

from oms_ops.platform import stack
from oms_ops.platform.settings import load_settings


def test_code_server_serves_the_location_the_generated_workspace_points_at(tmp_path):
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
    from dagster._core.test_utils import instance_for_test
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    settings = load_settings({"OMS_HOME": str(tmp_path / "home")})
    state = stack.StackState()
    env = stack.dagster_env(stack.child_env(settings, state))
    assert env["DAGSTER_GRPC_TIMEOUT_SECONDS"] == "180"
    try:
        workspace = stack.start_code_server(settings, state, env)
        info = state.services["dagster-code-server"]
        assert stack.pid_alive(info.pid) and info.url.startswith("grpc://127.0.0.1:")
        assert workspace == settings.dagster_home / "workspace.yaml"
        (entry,) = yaml.safe_load(workspace.read_text())["load_from"]
        port = int(info.url.rsplit(":", 1)[1])
        assert entry == {
            "grpc_server": {"host": "127.0.0.1", "port": port, "location_name": stack.DAGSTER_LOCATION}
        }
        # recorded like every other service: `oms status` / `oms down` find it in the state file
        assert stack.read_state(settings).services["dagster-code-server"].pid == info.pid

        with instance_for_test() as instance:
            with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(workspace)])) as ctx:
                locations = ctx.create_request_context().get_code_location_entries()
                assert list(locations) == [stack.DAGSTER_LOCATION]
                loaded = locations[stack.DAGSTER_LOCATION]
                assert loaded.load_error is None, loaded.load_error
                assert isinstance(loaded.origin, GrpcServerCodeLocationOrigin)
                assert loaded.origin.port == port
                repo = loaded.code_location.get_repositories()
                jobs = {j.name for r in repo.values() for j in r.get_all_jobs()}
                assert {"ingest_and_allocate", "analytics_dbt_build"} <= jobs
    finally:
        stack.stop_pid(state.services.get("dagster-code-server", stack.ServiceInfo("x")).pid)
    assert not stack.pid_alive(info.pid)
