"""Conversation trees: every message follows its parent; a thread shows one path of them.

Messages with the same parent and role are versions of one turn. The thread's active path
runs from a first prompt down to `Thread.active_leaf_id`; it is what the page shows and
what the model is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from . import Message, Thread


@dataclass(frozen=True)
class ThreadTree:
    """The shape of one thread: each message's parent and role (ids only, never text)."""

    parents: dict[int, int | None]
    roles: dict[int, str]
    active_leaf_id: int | None

    @classmethod
    def load(cls, session: Session, thread: Thread) -> ThreadTree:
        rows = session.execute(select(Message.id, Message.parent_id, Message.role)
                               .where(Message.thread_id == thread.id)
                               .order_by(Message.id)).all()
        if thread.active_leaf_id is None:
            # Written by something that does not know versions: one path, oldest first.
            ids = [i for i, _, _ in rows]
            parents = {i: (ids[n - 1] if n else None) for n, i in enumerate(ids)}
        else:
            parents = {i: p for i, p, _ in rows}
        return cls(parents=parents, roles={i: r for i, _, r in rows},
                   active_leaf_id=thread.active_leaf_id)

    @property
    def leaf(self) -> int | None:
        """The active path's last message (the newest message when none is recorded)."""
        if self.active_leaf_id in self.parents:
            return self.active_leaf_id
        return max(self.parents, default=None)

    def path(self, leaf: int | None = None) -> list[int]:
        """Ids from a first prompt down to `leaf` (default: the active leaf), oldest first."""
        node = self.leaf if leaf is None else leaf
        path: list[int] = []
        seen: set[int] = set()
        while node is not None and node in self.parents and node not in seen:
            seen.add(node)
            path.append(node)
            node = self.parents[node]
        return path[::-1]

    def siblings(self, message_id: int) -> list[int]:
        """The versions of `message_id`'s turn, itself included, oldest first."""
        parent, role = self.parents[message_id], self.roles[message_id]
        return sorted(i for i, p in self.parents.items()
                      if p == parent and self.roles[i] == role)

    def children(self) -> dict[int | None, list[int]]:
        """Each message's followers (None: the first prompts), oldest first."""
        children: dict[int | None, list[int]] = {}
        for message_id in sorted(self.parents):
            children.setdefault(self.parents[message_id], []).append(message_id)
        return children

    def latest_leaf(self, message_id: int) -> int:
        """The newest message at or below `message_id`: where its branch was last written.
        (Children are newer than their parent, so the newest descendant has none: a leaf.)"""
        children = self.children()
        newest, stack = message_id, [message_id]
        while stack:
            node = stack.pop()
            newest = max(newest, node)
            stack.extend(children.get(node, ()))
        return newest


def sibling_ids(session: Session, message: Message) -> list[int]:
    """The versions of `message`'s turn, itself included, oldest first."""
    parent = (Message.parent_id.is_(None) if message.parent_id is None
              else Message.parent_id == message.parent_id)
    return list(session.scalars(
        select(Message.id).where(Message.thread_id == message.thread_id, parent,
                                 Message.role == message.role).order_by(Message.id)))


def adopt_linear_thread(session: Session, thread: Thread) -> None:
    """Give a thread written without versions (no active leaf recorded) its tree: each
    parentless message follows the one before it, the newest is the active leaf (the same
    rule as the migration that introduced trees). Not committed; messages already loaded
    are not updated (refresh them)."""
    if thread.active_leaf_id is not None:
        return
    adopt, newest = _adoption_statements()
    session.execute(adopt, {"of_thread": thread.id})
    thread.active_leaf_id = session.scalar(newest, {"of_thread": thread.id})


@cache
def _adoption_statements():
    # Built once: this runs for the first prompt of every thread, and building an aliased
    # statement costs more than running it.
    messages = Message.__table__
    earlier = messages.alias("earlier")
    thread_id = bindparam("of_thread")
    adopt = (update(messages)
             .where(messages.c.thread_id == thread_id, messages.c.parent_id.is_(None))
             .values(parent_id=select(func.max(earlier.c.id))
                     .where(earlier.c.thread_id == thread_id, earlier.c.id < messages.c.id)
                     .scalar_subquery()))
    newest = select(func.max(messages.c.id)).where(messages.c.thread_id == thread_id)
    return adopt, newest


def compared_replies(session: Session, leaf_id: int | None) -> list[int]:
    """The replies written side by side with `leaf_id` when it is one of a comparison (one
    prompt sent to several models at once), oldest first; [] otherwise.

    A comparison's replies are stored in one transaction with their prompt, so they share
    its creation time; a later version of the turn (regenerated) does not.
    """
    if leaf_id is None:
        return []
    leaf = session.get(Message, leaf_id)
    if leaf is None or leaf.role != "assistant" or leaf.parent_id is None:
        return []
    ids = list(session.scalars(_compared_statement(), {"of_prompt": leaf.parent_id}))
    return ids if len(ids) > 1 and leaf_id in ids else []


@cache
def _compared_statement():
    messages = Message.__table__
    prompt = messages.alias("prompt")
    return (select(messages.c.id).join(prompt, prompt.c.id == messages.c.parent_id)
            .where(messages.c.parent_id == bindparam("of_prompt"),
                   messages.c.role == "assistant", prompt.c.role == "user",
                   messages.c.created_at == prompt.c.created_at)
            .order_by(messages.c.id))
