"""handlers.im_client against a real IM 2.0.0 with its Dummy connector (scripts/services.sh up im).

Templates never enable contextualization (tests/im/support.py); every test checks the
contextualization log says so. Waits are polls with deadlines; nothing asserts a duration.
"""

from __future__ import annotations

import socket

import pytest
import yaml

from handlers.im_client import (
    AUTH_LINE_SEPARATOR,
    DeleteResult,
    ImAuthorization,
    ImClient,
    ImNotFound,
    ImRejected,
    ImUnauthorized,
    ImUnavailable,
)
from tests.im.conftest import Deploy, ImPeer
from tests.im.support import compute_template, wait_final, wait_for

CONTEXTUALIZATION_DISABLED = "Contextualization disabled by the RADL/TOSCA template."


async def test_version(fx_im: ImClient) -> None:
    assert await fx_im.version() == "2.0.0"


async def test_async_create_reaches_configured_with_outputs_and_vm_info(
    fx_im: ImClient, fx_auth, fx_deploy: Deploy
) -> None:
    inf_id = await fx_deploy(compute_template(cpus=2))

    state = await wait_final(fx_im, fx_auth, inf_id)

    assert state.state == "configured"
    assert state.vm_states == {"0": "configured"}  # non-empty: pitfall 2 would show {} here
    assert CONTEXTUALIZATION_DISABLED in await fx_im.contmsg(fx_auth, inf_id)
    outputs = await fx_im.outputs(fx_auth, inf_id)
    assert outputs["server_ip"] == "10.0.0.1"
    assert outputs["server_id"]
    assert await fx_im.vm_ids(fx_auth, inf_id) == ["0"]
    (vm,) = await fx_im.vms(fx_auth, inf_id)
    assert (vm.vm_id, vm.node_name, vm.state) == ("0", "server", "configured")
    assert vm.system["provider.type"] == "Dummy"
    assert vm.system["cpu.count_min"] == 2
    assert vm.ips == ["10.0.0.1"]
    assert await fx_im.vm_state(fx_auth, inf_id, "0") == "configured"
    assert "tosca.nodes.Compute" in await fx_im.tosca(fx_auth, inf_id)
    assert inf_id in await fx_im.list_infrastructures(fx_auth)


async def test_update_with_a_larger_count_adds_vms_and_remove_vms_removes_them(
    fx_im: ImClient, fx_auth, fx_deploy: Deploy
) -> None:
    inf_id = await fx_deploy(compute_template(count=1))
    await wait_final(fx_im, fx_auth, inf_id)

    new_vms = await fx_im.update(fx_auth, inf_id, compute_template(count=3))

    assert sorted(new_vms) == ["1", "2"]  # IM lists only the VMs it added
    state = await wait_final(fx_im, fx_auth, inf_id)
    assert state.vm_states == {"0": "configured", "1": "configured", "2": "configured"}
    assert await fx_im.vm_ids(fx_auth, inf_id) == ["0", "1", "2"]

    # The stored template is the merge: the count is now 3 (pitfall 5).
    stored = yaml.safe_load(await fx_im.tosca(fx_auth, inf_id))
    scalable = stored["topology_template"]["node_templates"]["server"]["capabilities"]["scalable"]
    assert scalable["properties"]["default_instances"] == 3

    await fx_im.remove_vms(fx_auth, inf_id, ["0", "2"])
    assert await fx_im.vm_ids(fx_auth, inf_id) == ["1"]  # the survivor keeps its id (pitfall 6)
    assert await fx_im.update(fx_auth, inf_id, compute_template(count=1)) == []


async def test_stop_and_start_a_vm(fx_im: ImClient, fx_auth, fx_deploy: Deploy) -> None:
    inf_id = await fx_deploy(compute_template(count=2))
    await wait_final(fx_im, fx_auth, inf_id)

    await fx_im.stop_vm(fx_auth, inf_id, "1")
    await wait_for(lambda: fx_im.vm_state(fx_auth, inf_id, "1"), lambda s: s == "stopped",
                   what="VM 1 stopped")
    state = await fx_im.state(fx_auth, inf_id)
    assert state.vm_states == {"0": "configured", "1": "stopped"}
    assert (await fx_im.vm_info(fx_auth, inf_id, "1")).state == "stopped"

    await fx_im.start_vm(fx_auth, inf_id, "1")
    state = await wait_for(lambda: fx_im.state(fx_auth, inf_id),
                           lambda s: s.vm_states.get("1") == "configured", what="VM 1 started")
    assert state.state == "configured"


async def test_stop_and_start_the_whole_infrastructure(
    fx_im: ImClient, fx_auth, fx_deploy: Deploy
) -> None:
    inf_id = await fx_deploy(compute_template(count=2))
    await wait_final(fx_im, fx_auth, inf_id)

    await fx_im.stop(fx_auth, inf_id)
    stopped = await wait_for(lambda: fx_im.state(fx_auth, inf_id),
                             lambda s: s.state == "stopped", what="infrastructure stopped")
    assert set(stopped.vm_states.values()) == {"stopped"}
    await fx_im.start(fx_auth, inf_id)
    await wait_for(lambda: fx_im.state(fx_auth, inf_id), lambda s: s.state == "configured",
                   what="infrastructure started")


async def test_destroy_confirms_the_infrastructure_is_gone(
    fx_im: ImClient, fx_auth, fx_deploy: Deploy
) -> None:
    inf_id = await fx_deploy(compute_template())
    await wait_final(fx_im, fx_auth, inf_id)

    result = await fx_im.destroy(fx_auth, inf_id)

    assert result.already_gone is False and result.deletes >= 1
    with pytest.raises(ImNotFound) as caught:
        await fx_im.state(fx_auth, inf_id)
    assert caught.value.status == 404
    assert inf_id not in await fx_im.list_infrastructures(fx_auth)
    assert await fx_im.delete(fx_auth, inf_id) is False  # IM's 404 is tolerated
    assert await fx_im.destroy(fx_auth, inf_id, force=True) == DeleteResult(
        deletes=1, already_gone=True
    )


async def test_force_destroy(fx_im: ImClient, fx_auth, fx_deploy: Deploy) -> None:
    inf_id = await fx_deploy(compute_template())
    await wait_final(fx_im, fx_auth, inf_id)

    assert (await fx_im.destroy(fx_auth, inf_id, force=True)).already_gone is False
    assert not await fx_im.exists(fx_auth, inf_id)


async def test_destroy_while_im_is_still_creating(
    fx_im: ImClient, fx_auth, fx_deploy: Deploy
) -> None:
    """Right after an asynchronous create IM answers DELETE with 409 ("Invalid State to
    perform this operation") until its VMs are launched; destroy waits that out."""
    inf_id = await fx_deploy(compute_template(count=3))

    result = await fx_im.destroy(fx_auth, inf_id)

    assert result.already_gone is False
    assert await fx_im.gone(fx_auth, inf_id)


async def test_wrong_credentials_are_unauthorized(
    fx_im: ImClient, fx_im_peer: ImPeer, fx_auth, fx_deploy: Deploy
) -> None:
    wrong = fx_im_peer.auth(password="not-the-password")
    with pytest.raises(ImUnauthorized) as caught:
        await fx_im.create(wrong, compute_template())
    assert caught.value.status == 401
    assert "Invalid InfrastructureManager credentials" in caught.value.message
    with pytest.raises(ImUnauthorized):
        await fx_im.list_infrastructures(wrong)

    inf_id = await fx_deploy(compute_template())
    await wait_final(fx_im, fx_auth, inf_id)
    with pytest.raises(ImUnauthorized):  # IM answers 400 here, with the same message
        await fx_im.state(wrong, inf_id)
    with pytest.raises(ImUnauthorized) as caught:  # another valid user: 403
        await fx_im.state(fx_im_peer.auth("other"), inf_id)
    assert caught.value.status == 403
    assert inf_id not in await fx_im.list_infrastructures(fx_im_peer.auth("other"))
    with pytest.raises(ImUnauthorized) as caught:  # the other user cannot delete it either
        await fx_im.delete(fx_im_peer.auth("other"), inf_id)
    assert await fx_im.exists(fx_auth, inf_id)


async def test_no_im_line_is_unauthorized(fx_im: ImClient) -> None:
    only_cloud = ImAuthorization(f"id = dummy; type = Dummy{AUTH_LINE_SEPARATOR}")
    with pytest.raises(ImUnauthorized) as caught:
        await fx_im.create(only_cloud, compute_template())
    assert "No credentials provided for the InfrastructureManager" in caught.value.message


async def test_a_template_im_cannot_parse_gives_ims_message(fx_im: ImClient, fx_auth) -> None:
    """Malformed YAML: rejected even by an IM whose validation a reload switched off
    (see test_im_pitfalls.py for a type error, on a fresh IM)."""
    with pytest.raises(ImRejected) as caught:
        await fx_im.create(fx_auth, "tosca_definitions_version: tosca_simple_yaml_1_0\nx: [\n")

    assert caught.value.status == 400
    assert caught.value.message.startswith(
        "Error parsing request body: Error parsing TOSCA template: while parsing a flow node"
    )
    assert not caught.value.retryable


async def test_a_create_without_a_usable_cloud_fails_in_ims_state(
    fx_im: ImClient, fx_im_peer: ImPeer, fx_deploy: Deploy
) -> None:
    """What a site that cannot deploy looks like: accepted at once, then `failed`."""
    no_cloud = fx_im_peer.auth(dummy=False)
    inf_id = await fx_deploy(compute_template(), auth=no_cloud)

    state = await wait_final(fx_im, no_cloud, inf_id)

    assert (state.state, state.vm_states) == ("failed", {})
    assert "No VMI obtained from Sites to system 'server'" in await fx_im.contmsg(
        no_cloud, inf_id
    )


async def test_unknown_ids_are_not_found(fx_im: ImClient, fx_auth) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(ImNotFound):
        await fx_im.state(fx_auth, missing)
    with pytest.raises(ImNotFound):
        await fx_im.vm_info(fx_auth, missing, "0")
    assert await fx_im.delete(fx_auth, missing) is False
    with pytest.raises(ValueError):
        await fx_im.state(fx_auth, "../version")


async def test_list_infrastructures_is_per_user(
    fx_im: ImClient, fx_im_peer: ImPeer, fx_auth, fx_deploy: Deploy
) -> None:
    mine = {await fx_deploy(compute_template()) for _ in range(2)}
    other_auth = fx_im_peer.auth("other")
    theirs = await fx_deploy(compute_template(), auth=other_auth)

    assert mine <= set(await fx_im.list_infrastructures(fx_auth))
    assert theirs not in await fx_im.list_infrastructures(fx_auth)
    assert theirs in await fx_im.list_infrastructures(other_auth)


def _closed_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_no_answer_is_unavailable_and_retryable(fx_auth) -> None:
    async with ImClient(f"http://127.0.0.1:{_closed_loopback_port()}", timeout=5) as im:
        with pytest.raises(ImUnavailable) as caught:
            await im.state(fx_auth, "anything")
    assert caught.value.retryable
    assert caught.value.status is None
