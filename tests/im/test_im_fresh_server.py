"""Tests that each need an IM server of their own, fresh from scripts/services.sh.

Pitfall 1: DELETE can answer 200 and the infrastructure comes back (IM reloads it from its
database, not deleted). Pitfall 2: such a reload deserializes the stored TOSCA with
validation patched off for the whole process, so from then on IM accepts invalid templates.
Lost deletes also happen in ordinary sequences (an update, then a delete while IM is still
reconfiguring), so the shared IM may have stopped validating at any point of a session.
Here: tests that rely on IM validating templates, and the test that provokes lost deletes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from handlers.im_client import ImAuthorization, ImClient, ImNotFound, ImRejected
from tests.im.conftest import ImPeer
from tests.im.support import (
    assert_safe_for_im,
    compute_template,
    indigo_simple_node,
    wait_final,
)

CONTEXTUALIZATION_DISABLED = "Contextualization disabled by the RADL/TOSCA template."


@pytest.fixture(name="fx_private_im")
async def fixture_private_im(fx_private_im_peer: ImPeer) -> AsyncIterator[ImClient]:
    async with ImClient(fx_private_im_peer.url) as client:
        yield client


async def _poll_state(im: ImClient, auth: ImAuthorization, inf_id: str,
                      stop: asyncio.Event) -> None:
    """A second client reading the state every 20 ms, as a handler's poller would."""
    while not stop.is_set():
        try:
            await im.state(auth, inf_id)
        except ImNotFound:
            return
        await asyncio.sleep(0.02)


async def test_destroy_deletes_again_until_the_infrastructure_stays_gone(
    fx_private_im: ImClient, fx_private_im_peer: ImPeer
) -> None:
    """Delete right after a synchronous create while another client polls: the conditions
    under which IM loses deletes. Whether a given round loses one is IM's race; every round
    must end with the infrastructure gone."""
    im, auth = fx_private_im, fx_private_im_peer.auth()
    deletes_per_round = []
    for _ in range(8):
        inf_id = await im.create(auth, assert_safe_for_im(compute_template()),
                                 asynchronous=False)
        stop = asyncio.Event()
        poller = asyncio.create_task(_poll_state(im, auth, inf_id, stop))
        try:
            result = await im.destroy(auth, inf_id, max_deletes=5)
        finally:
            stop.set()
            await poller
        assert result.already_gone is False
        assert await im.gone(auth, inf_id)
        deletes_per_round.append(result.deletes)

    assert await im.list_infrastructures(auth) == []
    print(f"DELETEs needed per round: {deletes_per_round}")  # shown with pytest -s


async def test_a_template_im_rejects_gives_ims_message(
    fx_private_im: ImClient, fx_private_im_peer: ImPeer
) -> None:
    template = compute_template().replace("tosca.nodes.Compute", "tosca.nodes.NoSuchType")

    with pytest.raises(ImRejected) as caught:
        await fx_private_im.create(fx_private_im_peer.auth(), template)

    error = caught.value
    assert error.status == 400
    assert error.message.startswith("Error parsing request body: Error parsing TOSCA template")
    assert 'InvalidTypeError: Type "tosca.nodes.NoSuchType" is not a valid type.' in error.message
    assert "File /" not in error.message  # IM's server stack trace is cut off
    assert not error.retryable


async def test_indigo_template_from_the_corpus_deploys_without_contextualization(
    fx_private_im: ImClient, fx_private_im_peer: ImPeer
) -> None:
    im, auth = fx_private_im, fx_private_im_peer.auth()
    inf_id = await im.create(auth, indigo_simple_node(count=2))

    state = await wait_final(im, auth, inf_id)

    assert state.state == "configured", await im.contmsg(auth, inf_id)
    assert sorted(state.vm_states) == ["0", "1"]
    assert CONTEXTUALIZATION_DISABLED in await im.contmsg(auth, inf_id)
    outputs = await im.outputs(auth, inf_id)
    assert set(outputs) == {"node_ip", "node_creds"}
    assert outputs["node_creds"]["user"]  # the Dummy VM's credential, via endpoint.credential
    assert {vm.node_name for vm in await im.vms(auth, inf_id)} == {"simple_node"}
    assert not (await im.destroy(auth, inf_id)).already_gone
