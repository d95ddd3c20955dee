"""The bundled app answers over HTTP as a signed-in user."""

from nanotypedb.testing import TestServer


def test_create_and_list(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    task = alice.call("createTask", title="write tests")
    assert task["owner_id"] == "alice"
    assert [t["id"] for t in alice.call("listTasks")] == [task["id"]]
