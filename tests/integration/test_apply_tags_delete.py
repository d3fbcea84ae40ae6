"""`delete`, `add_tags` and `remove_tags` against real PostgreSQL."""

from __future__ import annotations

import pytest

from tests.integration.apply_support import (
    Conn,
    codes,
    contact,
    insert_contacts,
    new_account,
    outcomes,
    run_job,
)

pytestmark = pytest.mark.postgres


def test_delete_is_soft_and_frees_the_email(conn: Conn) -> None:
    account = new_account(conn)
    live, already = insert_contacts(conn, account, [{"email": "d@example.com"}, {"email": "e@example.com"}])
    conn.execute("UPDATE contacts SET deleted_at = now() WHERE id = %s", (already,))
    job = run_job(conn, account, {"action": "delete", "target": {"ids": [live, already, 10**12]}})
    assert codes(conn, job.id) == ["succeeded", "not_found", "not_found"]
    assert contact(conn, live)["deleted_at"] is not None
    assert outcomes(conn, job.id).get_column("changed_fields").to_list() == [["deleted_at"], None, None]
    # The unique email index covers live rows only: the address can be used again.
    (again,) = insert_contacts(conn, account, [{"email": "d@example.com"}])
    assert again != live


def test_add_tags_keeps_a_sorted_set_and_reports_no_change(conn: Conn) -> None:
    account = new_account(conn)
    plain, has_all, unsorted = insert_contacts(
        conn,
        account,
        [
            {"email": "p@example.com", "tags": ["m"]},
            {"email": "h@example.com", "tags": ["a", "vip"]},
            {"email": "u@example.com", "tags": ["z", "b"]},
        ],
    )
    job = run_job(
        conn,
        account,
        {"action": "add_tags", "target": {"ids": [plain, has_all, unsorted]}, "tags": ["vip", "a", "vip"]},
    )
    assert codes(conn, job.id) == ["succeeded", "no_change", "succeeded"]
    assert contact(conn, plain)["tags"] == ["a", "m", "vip"]
    assert contact(conn, has_all)["tags"] == ["a", "vip"]
    assert contact(conn, unsorted)["tags"] == ["a", "b", "vip", "z"]


def test_remove_tags_drops_only_the_named_tags(conn: Conn) -> None:
    account = new_account(conn)
    holder, without = insert_contacts(
        conn,
        account,
        [{"email": "r@example.com", "tags": ["a", "b", "c"]}, {"email": "w@example.com", "tags": ["c"]}],
    )
    before = contact(conn, without)
    job = run_job(
        conn, account, {"action": "remove_tags", "target": {"ids": [holder, without]}, "tags": ["a", "b"]}
    )
    assert codes(conn, job.id) == ["succeeded", "no_change"]
    assert contact(conn, holder)["tags"] == ["c"]
    assert contact(conn, without)["row_version"] == before["row_version"]


def test_tag_filter_target_sees_the_snapshot_taken_at_plan_time(conn: Conn) -> None:
    account = new_account(conn)
    tagged = insert_contacts(
        conn, account, [{"email": f"t{i}@example.com", "tags": ["old"]} for i in range(5)]
    )
    job = run_job(
        conn,
        account,
        {"action": "remove_tags", "target": {"filter": {"tags": {"contains": "old"}}}, "tags": ["old"]},
        chunk_size=2,
    )
    assert (job.total, job.succeeded) == (5, 5)
    assert [contact(conn, i)["tags"] for i in tagged] == [[]] * 5
