"""The one keyset pager every list uses: edges of a page, cursors it ignores, both orders, key columns other than
created_at (a conversation's messages page by seq), and the same rules for a list held in memory."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from portico.storage.conversations import list_messages
from portico.storage.database import Database
from portico.storage.models import Organization, Project
from portico.storage.paging import Order, Page, page, page_in_memory
from portico.storage.resources import Conversation, ConversationMessage

# Two share a second, so their order is decided by the id.
PROJECTS = [("proj_c", 100), ("proj_a", 200), ("proj_b", 200), ("proj_d", 300)]


async def _projects(database: Database) -> None:
    async with database.session() as session:
        session.add_all([Organization(id=org, name=org, created_at=0) for org in ("org_mine", "org_theirs")])
        await session.flush()
        session.add_all([Project(id=id_, organization_id="org_mine", name=id_, created_at=at) for id_, at in PROJECTS])
        session.add(Project(id="proj_theirs", organization_id="org_theirs", name="theirs", created_at=150))
        await session.commit()


async def _page(database: Database, *, limit: int, after: str | None, order: Order = "asc") -> tuple[list[str], bool]:
    mine = Project.organization_id == "org_mine"
    async with database.session() as session:
        found = await page(
            session,
            select(Project).where(mine),
            key=[Project.created_at, Project.id],
            scope=mine,
            limit=limit,
            after=after,
            order=order,
        )
    return [project.id for project in found.items], found.has_more


async def test_an_empty_list_is_one_empty_page(database: Database) -> None:
    assert await _page(database, limit=20, after=None) == ([], False)


async def test_pages_follow_created_at_then_id_up_to_an_exact_last_page(database: Database) -> None:
    await _projects(database)

    assert await _page(database, limit=4, after=None) == (["proj_c", "proj_a", "proj_b", "proj_d"], False)
    assert await _page(database, limit=2, after=None) == (["proj_c", "proj_a"], True)
    assert await _page(database, limit=2, after="proj_a") == (["proj_b", "proj_d"], False)
    assert await _page(database, limit=2, after="proj_d") == ([], False)


async def test_descending_pages_walk_back_from_the_newest(database: Database) -> None:
    await _projects(database)

    assert await _page(database, limit=3, after=None, order="desc") == (["proj_d", "proj_b", "proj_a"], True)
    assert await _page(database, limit=3, after="proj_a", order="desc") == (["proj_c"], False)


async def test_an_unknown_or_other_tenants_cursor_gives_the_first_page(database: Database) -> None:
    await _projects(database)
    first_page = (["proj_c", "proj_a"], True)

    assert await _page(database, limit=2, after="proj_nonexistent") == first_page
    # proj_theirs sorts between proj_c and proj_a; honouring it would reveal that it exists and when.
    assert await _page(database, limit=2, after="proj_theirs") == first_page


async def test_messages_page_by_seq_not_by_id(database: Database) -> None:
    ids_by_seq = ["msg_z", "msg_b", "msg_y", "msg_a"]
    async with database.session() as session:
        session.add(
            Conversation(id="conv_1", project_id="proj_x", model="echo", context_strategy="error", created_at=1)
        )
        await session.flush()
        session.add_all(
            ConversationMessage(
                id=id_, conversation_id="conv_1", seq=seq, role="user", content="hi", tokens=1, created_at=1
            )
            for seq, id_ in enumerate(ids_by_seq, start=1)
        )
        await session.commit()

    async with database.session() as session:
        first = await list_messages(session, "conv_1", limit=3, after=None, order="asc")
        rest = await list_messages(session, "conv_1", limit=3, after=first.items[-1].id, order="asc")
        newest = await list_messages(session, "conv_1", limit=2, after=None, order="desc")

    assert ([m.id for m in first.items], first.has_more) == (ids_by_seq[:3], True)
    assert ([m.id for m in rest.items], rest.has_more) == (ids_by_seq[3:], False)
    assert ([m.id for m in newest.items], newest.has_more) == (["msg_a", "msg_y"], True)


@dataclass
class Item:
    id: str


def _ids(found: Page[Item]) -> tuple[list[str], bool]:
    return [item.id for item in found.items], found.has_more


def test_a_list_in_memory_pages_by_the_same_rules() -> None:
    items = [Item(f"m-{index}") for index in range(4)]

    assert _ids(page_in_memory([], limit=2, after=None)) == ([], False)
    assert _ids(page_in_memory(items, limit=4, after=None)) == (["m-0", "m-1", "m-2", "m-3"], False)
    assert _ids(page_in_memory(items, limit=3, after=None)) == (["m-0", "m-1", "m-2"], True)
    assert _ids(page_in_memory(items, limit=3, after="m-2")) == (["m-3"], False)
    assert _ids(page_in_memory(items, limit=3, after="m-3")) == ([], False)
    assert _ids(page_in_memory(items, limit=2, after="m-9")) == (["m-0", "m-1"], True)
    assert _ids(page_in_memory(items, limit=2, after="m-2", order="desc")) == (["m-1", "m-0"], False)
