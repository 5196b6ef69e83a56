"""conversation trees: each message's parent, each thread's active leaf

Existing threads become a single path: every message follows the one before it in its
thread, and the thread's newest message is its active leaf.

Revision ID: 0003
Revises: 0002

"""
from contextlib import contextmanager

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

PARENT_FK = 'fk_messages_parent_id'


@contextmanager
def keeping_stream_deltas():
    """SQLite changes a table's constraints by copying it and dropping the original; with
    foreign keys on, that drop deletes the rows of stream_deltas that point at it. Set them
    aside and put them back."""
    sqlite = op.get_bind().dialect.name == 'sqlite'
    if sqlite:
        op.execute('CREATE TEMPORARY TABLE kept_stream_deltas AS SELECT * FROM stream_deltas')
    yield
    if sqlite:
        op.execute('INSERT INTO stream_deltas SELECT * FROM kept_stream_deltas '
                   'WHERE id NOT IN (SELECT id FROM stream_deltas)')
        op.execute('DROP TABLE kept_stream_deltas')


def upgrade():
    with keeping_stream_deltas(), op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(PARENT_FK, 'messages', ['parent_id'], ['id'],
                                    ondelete='SET NULL')
        batch_op.create_index('ix_messages_parent_id', ['parent_id'], unique=False)
    op.add_column('threads', sa.Column('active_leaf_id', sa.Integer(), nullable=True))

    op.execute('UPDATE messages SET parent_id = ('
               'SELECT MAX(earlier.id) FROM messages AS earlier '
               'WHERE earlier.thread_id = messages.thread_id AND earlier.id < messages.id)')
    op.execute('UPDATE threads SET active_leaf_id = ('
               'SELECT MAX(messages.id) FROM messages WHERE messages.thread_id = threads.id)')


def downgrade():
    # Every message stays; the versions beside the active path become plain messages again.
    # A plain DROP COLUMN (SQLite 3.35+): copying threads would cascade to every message.
    op.drop_column('threads', 'active_leaf_id')
    with keeping_stream_deltas(), op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_parent_id')
        batch_op.drop_constraint(PARENT_FK, type_='foreignkey')
        batch_op.drop_column('parent_id')
