"""The browser client, /client.js, in headless Chromium against a real server on 127.0.0.1.

Every page is on the server's own origin and imports the module from it; what the client reports
(every onResult value, every error, every status) is recorded in the page by harness.js.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _browser import Chromium, Tab

from nanotypedb.demo.tasks import app as tasks_app
from nanotypedb.testing import TestServer, serve

OpenTab = Callable[..., Tab]
CASES = json.loads((Path(__file__).parents[1] / "fixtures" / "optimistic_cases.json").read_text(encoding="utf-8"))

# Each case through the module: the effect alone, and the layering of pending mutations over a subscription.
RUN_CASES = """async (cases) => {
    const c = await import('/client.js');
    const out = {};
    for (const k of cases) {
        const m = k.mutation;
        const spec = c.normalizeSpec(m.spec);
        const built = spec.kind === 'insert' ? c.optimisticRow(spec, m.args, m.user_id, m.temp_id) : undefined;
        const row = m.result ?? built;
        const sub = {name: 'q', args: k.args_of_subscription, data: k.data, reads: k.reads};
        const [layered] = c.layer([sub], [{spec, args: m.args, row}]);
        out[k.name] = {effect: c.applyEffect(spec, m.args, sub, row), layered};
    }
    return out;
}"""


def titles(rows: list[dict[str, Any]]) -> list[str]:
    return [row["title"] for row in rows]


# -- rpc ---------------------------------------------------------------------------------------


def test_rpc_returns_data_and_rejects_with_the_servers_error_envelope(server: TestServer, open_tab: OpenTab) -> None:
    tab = open_tab(server, server.token("alice"))
    created = tab.settle("() => h.db.rpc('createTask', {title: 'From the browser'})")
    assert created["ok"], created
    task = created["value"]
    assert (task["title"], task["status"], task["owner_id"]) == ("From the browser", "pending", "alice")
    assert isinstance(task["id"], int)
    assert tab.settle("() => h.db.rpc('listTasks')")["value"] == [task]

    refused = tab.settle("() => h.db.rpc('createTask', {title: ''})")
    assert not refused["ok"]
    error = refused["error"]
    assert (error["name"], error["code"], error["isError"]) == ("NanoTypeDBError", "ValidationFailed", True)
    assert [d["field"] for d in error["details"]] == ["title"]
    assert error["message"] and isinstance(error["requestId"], str) and error["requestId"]

    assert tab.settle("() => h.db.rpc('noSuchFunction')")["error"]["code"] == "FunctionNotFound"
    anonymous = open_tab(server)
    assert anonymous.settle("() => h.db.rpc('listTasks')")["error"]["code"] == "Unauthenticated"
    assert tab.console_errors == []


# -- live queries ------------------------------------------------------------------------------


def test_a_live_query_gets_its_first_result_then_another_clients_write(server: TestServer, open_tab: OpenTab) -> None:
    token = server.token("alice")
    tab = open_tab(server, token)
    tab.watch("tasks", "listTasks", {"limit": 10})
    tab.watch("count", "countTasks")
    assert tab.wait_result("tasks", "(v) => Array.isArray(v)") == []
    assert tab.wait_result("count", "(v) => typeof v === 'number'") == 0

    server.client(token).call("createTask", title="Written over HTTP")
    rows = tab.wait_result("tasks", "(v) => v.length === 1")
    assert titles(rows) == ["Written over HTTP"]
    assert tab.wait_result("count", "(v) => v === 1") == 1
    assert tab.results("tasks") == [[], rows]  # nothing in between, nothing twice

    # A second listener of the same query shares the subscription and gets the current value at once.
    tab.watch("again", "listTasks", {"limit": 10})
    assert tab.wait_result("again", "(v) => v.length === 1") == rows
    tab.js("() => h.stops.again()")
    server.client(token).call("createTask", title="Second")
    assert titles(tab.wait_result("tasks", "(v) => v.length === 2")) == ["Second", "Written over HTTP"]


def test_row_level_security_bob_never_sees_alices_rows(server: TestServer, open_tab: OpenTab) -> None:
    alice_token, bob_token = server.token("alice"), server.token("bob")
    alice, bob = open_tab(server, alice_token), open_tab(server, bob_token)
    for tab in (alice, bob):
        tab.watch("tasks", "listTasks")
        tab.watch("count", "countTasks")
        tab.wait_result("tasks", "(v) => v.length === 0")

    server.client(alice_token).call("createTask", title="Alice over HTTP")
    assert alice.settle("() => h.db.performMutation('createTask', {title: 'Alice in the browser'})")["ok"]
    alice.wait_result("tasks", "(v) => v.length === 2 && v.every(t => typeof t.id === 'number')")
    # Bob's own write commits after Alice's: once he sees it, every earlier commit has reached him too.
    assert bob.settle("() => h.db.performMutation('createTask', {title: 'Bob in the browser'})")["ok"]
    bob.wait_result("tasks", "(v) => v.length === 1 && typeof v[0].id === 'number'")
    assert bob.wait_result("count", "(v) => v === 1") == 1
    assert alice.wait_result("count", "(v) => v === 2") == 2

    for value in bob.results("tasks"):
        assert all(row["owner_id"] == "bob" for row in value), value
    assert bob.js("() => h.db.rpc('getTask', {id: 1}).catch(e => e.code)") == "RowNotFound"
    assert titles(bob.results("tasks")[-1]) == ["Bob in the browser"]


# -- optimistic mutations ----------------------------------------------------------------------


@pytest.fixture
def alice_with_a_task(server: TestServer, open_tab: OpenTab) -> tuple[Tab, dict[str, Any]]:
    token = server.token("alice")
    task = server.client(token).call("createTask", title="Keep me")
    tab = open_tab(server, token)
    tab.watch("tasks", "listTasks")
    tab.wait_result("tasks", "(v) => v.length === 1")
    return tab, task


def test_a_refused_optimistic_create_update_and_delete_roll_back(alice_with_a_task: tuple[Tab, dict[str, Any]]) -> None:
    tab, task = alice_with_a_task
    # Each call is refused by the server (ValidationFailed): the effect shows, then goes.
    create = tab.settle("() => h.db.performMutation('createTask', {title: 'x'.repeat(501)})")
    update = tab.settle("(id) => h.db.performMutation('updateTask', {id, title: 'y'.repeat(501)})", task["id"])
    # An argument the function does not take: refused, though the row is there to delete.
    delete = tab.settle("(id) => h.db.performMutation('deleteTask', {id, unknown: 1})", task["id"])
    for outcome in (create, update, delete):
        assert not outcome["ok"] and outcome["error"]["code"] == "ValidationFailed"

    seen = tab.results("tasks")
    assert seen[0] == [task]
    shown_create, rolled_back_1, shown_update, rolled_back_2, shown_delete, rolled_back_3 = seen[1:]
    assert [row["title"] for row in shown_create] == ["x" * 501, "Keep me"]
    assert shown_create[0]["id"] == "optimistic:1" and shown_create[0]["owner_id"] == "alice"
    assert shown_update == [{**task, "title": "y" * 501}]
    assert shown_delete == []
    assert rolled_back_1 == rolled_back_2 == rolled_back_3 == [task]
    assert tab.js("() => h.db.pendingMutations") == 0


def test_no_flicker_the_optimistic_row_stays_and_its_temporary_id_becomes_the_real_one(
    server: TestServer, open_tab: OpenTab
) -> None:
    tab = open_tab(server, server.token("alice"))
    tab.watch("tasks", "listTasks")
    tab.watch("count", "countTasks")
    tab.watch("page", "listTasksPage", {"limit": 2})
    tab.wait_result("page", "(v) => v.items.length === 0")
    tab.wait_result("tasks", "(v) => v.length === 0")

    created = tab.settle(
        "() => Promise.all(['One', 'Two', 'Three'].map(title => h.db.performMutation('createTask', {title})))"
    )
    assert created["ok"], created
    ids = [row["id"] for row in created["value"]]
    tab.wait("() => h.db.pendingMutations === 0")
    tab.wait_result("tasks", "(v) => v.length === 3 && v.every(t => typeof t.id === 'number')")
    completed = tab.settle("(id) => h.db.performMutation('completeTask', {id})", ids[0])
    deleted = tab.settle("(id) => h.db.performMutation('deleteTask', {id})", ids[1])
    assert completed["ok"] and deleted["ok"]
    tab.wait("() => h.db.pendingMutations === 0")

    seen = tab.results("tasks")
    for title, real_id in zip(["One", "Two", "Three"], ids, strict=True):
        shown = [next((row for row in value if row["title"] == title), None) for value in seen]
        first = next(i for i, row in enumerate(shown) if row is not None)
        present = [row is not None for row in shown[first:]]
        # Present from its first appearance on; only "Two", deleted, goes: once, and for good.
        assert present == sorted(present, reverse=True), f"{title} flickered: {shown}"
        assert all(present) == (title != "Two")
        ids_shown = [row["id"] for row in shown[first:] if row is not None]
        real_from = ids_shown.index(real_id)
        assert ids_shown[:real_from] == [ids_shown[0]] * real_from and ids_shown[0].startswith("optimistic:")
        assert ids_shown[real_from:] == [real_id] * (len(ids_shown) - real_from), f"{title}: {ids_shown}"
    statuses = [row["status"] for value in seen for row in value if row["title"] == "One"]
    done = statuses.index("completed")
    assert statuses[done:] == ["completed"] * (len(statuses) - done)
    assert titles(seen[-1]) == ["Three", "One"]
    # A count shows inserts at once; a delete leaves it to the server (docs/live-queries.md).
    assert tab.results("count") == [0, 1, 2, 3, 2]
    page = tab.results("page")[-1]
    assert [row["title"] for row in page["items"]] == ["Three", "One"]
    assert tab.console_errors == []


def test_a_registered_custom_optimistic_function(server: TestServer, open_tab: OpenTab) -> None:
    token = server.token("alice")
    task = server.client(token).call("createTask", title="Custom")
    # The server's declaration is replaced here by a custom one, as an app may do.
    tab = open_tab(server, token, functions={"completeTask": "custom:markDone"})
    tab.js(
        """() => h.db.registerOptimistic('markDone', (store, args) => {
            const tasks = store.getQuery('listTasks', {});
            if (tasks) store.setQuery('listTasks', {}, tasks.map(t => t.id === args.id ? {...t, status: 'marked'} : t));
        })"""
    )
    tab.watch("tasks", "listTasks")
    tab.wait_result("tasks", "(v) => v.length === 1")
    assert tab.settle("(id) => h.db.performMutation('completeTask', {id})", task["id"])["ok"]
    tab.wait("() => h.db.pendingMutations === 0")
    assert [value[0]["status"] for value in tab.results("tasks")] == ["pending", "marked", "completed"]


@pytest.fixture(scope="module")
def vector_outcomes(chromium: Chromium, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Every case of tests/fixtures/optimistic_cases.json run in one page, by name."""
    with serve(tasks_app, tmp_path_factory.mktemp("vectors")) as server:
        context = chromium.new_context()
        try:
            page = chromium.run(context.new_page())
            chromium.run(page.goto(f"{server.url}/healthz"))
            outcomes: dict[str, Any] = chromium.run(page.evaluate(RUN_CASES, CASES["cases"]))
        finally:
            chromium.run(context.close())
        yield outcomes


@pytest.mark.parametrize("case", CASES["cases"], ids=lambda case: case["name"])
def test_optimistic_vector(case: dict[str, Any], vector_outcomes: dict[str, Any]) -> None:
    outcome = vector_outcomes[case["name"]]
    assert outcome["effect"] == case["expected"]
    assert outcome["layered"] == case["expected"]


def test_stacked_mutations_and_custom_functions_layer_in_order(server: TestServer, open_tab: OpenTab) -> None:
    tab = open_tab(server)
    views = tab.js(
        """() => {
            const c = h.mod;
            const reads = [{table: 'tasks', kind: 'rows', filters: {}, order: [['id', 'desc']], limit: 3}];
            const rows = [{id: 2, title: 'b', status: 'pending'}, {id: 1, title: 'a', status: 'pending'}];
            const subs = [
                {name: 'listTasks', args: {}, data: rows, reads, version: 5},
                {name: 'countTasks', args: {}, data: 2, reads: [{...reads[0], kind: 'count', limit: null}], version: 5},
            ];
            const insert = {kind: 'insert', table: 'tasks', columns: ['id', 'title', 'status'],
                            defaults: {status: 'pending'}, owner: null};
            const mutations = [
                {spec: insert, args: {title: 'c'}, row: c.optimisticRow(insert, {title: 'c'}, null, 'optimistic:1')},
                {spec: {kind: 'update', table: 'tasks', id: 'id', set: {status: 'completed'}},
                 args: {id: 'optimistic:1'}},
                {spec: {kind: 'custom', name: 'rename'}, args: {title: 'renamed'}},
                {spec: {kind: 'delete', table: 'tasks', id: 'id'}, args: {id: 1}},
                // Answered at version 5: the subscriptions already hold it, so it shows nothing more.
                {spec: {kind: 'delete', table: 'tasks', id: 'id'}, args: {id: 2}, version: 5},
            ];
            const custom = (name) => name === 'rename' ? (store, args) => {
                const list = store.getQuery('listTasks');
                store.setQuery('listTasks', {}, list.map(t => ({...t, title: args.title})));
            } : undefined;
            return c.layer(subs, mutations, custom);
        }"""
    )
    assert views[0] == [
        {"id": "optimistic:1", "title": "renamed", "status": "completed"},
        {"id": 2, "title": "renamed", "status": "pending"},
    ]
    assert views[1] == 3


# -- auth, reconnection, status ----------------------------------------------------------------


def test_set_auth_restarts_the_subscriptions_as_the_new_caller(server: TestServer, open_tab: OpenTab) -> None:
    alice_token, bob_token = server.token("alice"), server.token("bob")
    server.client(alice_token).call("createTask", title="Alice's")
    server.client(bob_token).call("createTask", title="Bob's")
    tab = open_tab(server, alice_token)
    tab.watch("tasks", "listTasks")
    assert titles(tab.wait_result("tasks", "(v) => v.length === 1")) == ["Alice's"]

    assert tab.settle("(t) => h.db.setAuth(t)", bob_token) == {"ok": True, "value": {"kind": "user", "id": "bob"}}
    assert titles(tab.wait_result("tasks", "(v) => v.length === 1 && v[0].owner_id === 'bob'")) == ["Bob's"]

    refused = tab.settle("() => h.db.setAuth('not a token')")
    assert refused["error"]["code"] == "InvalidToken"
    # The connection is anonymous now: the subscription is refused, and says so.
    assert tab.wait("() => h.errors.tasks.length > 0 && h.errors.tasks[0].code") == "Unauthenticated"

    assert tab.settle("(t) => h.db.setAuth(t)", alice_token)["ok"]
    assert titles(tab.wait_result("tasks", "(v) => v.length === 1 && v[0].owner_id === 'alice'")) == ["Alice's"]
    assert tab.js("() => h.db.principal") == {"kind": "user", "id": "alice"}


def test_a_mutation_without_a_reply_rolls_back_with_connection_lost(server: TestServer, open_tab: OpenTab) -> None:
    tab = open_tab(server, server.token("alice"))
    tab.watch("tasks", "listTasks")
    assert tab.settle("() => h.db.performMutation('createTask', {title: 'First'})")["ok"]
    tab.wait_result("tasks", "(v) => v.length === 1 && typeof v[0].id === 'number'")

    # The call is on the wire when the socket closes: its reply can no longer arrive.
    lost = tab.settle(
        """() => {
            const p = h.db.performMutation('createTask', {title: 'Lost reply'});
            h.db._ws.close();
            return p;
        }"""
    )
    assert lost["error"]["code"] == "ConnectionLost"
    # The server committed it all the same: the subscription, re-established, shows it.
    rows = tab.wait_result("tasks", "(v) => v.length === 2 && v.every(t => typeof t.id === 'number')")
    assert titles(rows) == ["Lost reply", "First"]
    shown = [titles(value) for value in tab.results("tasks")]
    assert shown[-4:] == [["First"], ["Lost reply", "First"], ["First"], ["Lost reply", "First"]]
    assert tab.js("() => h.statuses") == ["connecting", "open", "reconnecting", "open"]


def test_reconnects_after_the_server_restarts(server: TestServer, open_tab: OpenTab) -> None:
    token = server.token("alice")
    tab = open_tab(server, token)
    tab.watch("tasks", "listTasks")
    server.client(token).call("createTask", title="Before")
    tab.wait_result("tasks", "(v) => v.length === 1")

    server.stop()
    tab.wait("() => h.db.status === 'reconnecting'")
    # A mutation made while the server is down shows at once and is sent once the client is back.
    tab.js("() => { window.queued = h.settle(h.db.performMutation('createTask', {title: 'While down'})); }")
    assert titles(tab.wait_result("tasks", "(v) => v.length === 2")) == ["While down", "Before"]

    server.start()
    assert tab.js("() => window.queued")["ok"]
    tab.wait("() => h.db.status === 'open'")
    server.client(token).call("createTask", title="After")
    rows = tab.wait_result("tasks", "(v) => v.length === 3 && v.every(t => typeof t.id === 'number')")
    assert titles(rows) == ["After", "While down", "Before"]
    statuses = tab.js("() => h.statuses")
    assert statuses[:3] == ["connecting", "open", "reconnecting"] and statuses[-1] == "open"
    assert set(statuses[3:]) <= {"reconnecting", "open"}


def test_a_token_function_is_asked_again_on_each_connection(server: TestServer, open_tab: OpenTab) -> None:
    tab = open_tab(server)
    tab.js(
        """(token) => {
            h.db.close();
            window.asked = 0;
            h.open({token: async () => { window.asked += 1; return token; }});
        }""",
        server.token("alice"),
    )
    tab.wait("() => h.db.status === 'open'")
    assert tab.js("() => [window.asked, h.db.principal]") == [1, {"kind": "user", "id": "alice"}]
    tab.js("() => h.db._ws.close()")
    tab.wait("() => h.db.status === 'reconnecting'")
    tab.wait("() => h.db.status === 'open'")
    assert tab.js("() => window.asked") == 2
    assert tab.settle("() => h.db.rpc('countTasks')") == {"ok": True, "value": 0}


def test_close_ends_the_client(server: TestServer, open_tab: OpenTab) -> None:
    tab = open_tab(server, server.token("alice"))
    tab.wait("() => h.db.status === 'open'")
    tab.js("() => h.db.close()")
    assert tab.js("() => h.statuses") == ["connecting", "open", "closed"]
    assert tab.settle("() => h.db.rpc('listTasks')")["error"]["code"] == "ClientClosed"
